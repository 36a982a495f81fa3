#include "kvpager/tp/rank_link.hpp"

namespace kvpager::tp {

void RankLink::fail_died(Reply& out, const char* when) {
  // The channel closes a moment before the kernel reports the exit: give it that moment.
  process_->wait_exit(std::chrono::milliseconds(200));
  out.seq = seq_;
  out.status = ReplyStatus::kDied;
  copy_text(out.message, "rank " + std::to_string(rank().value) + " (pid " +
                             std::to_string(process_->pid()) + ") " + process_->exit_description() +
                             " " + when);
}

void RankLink::fail_timeout(Reply& out) {
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - posted_at_).count();
  out.seq = seq_;
  out.status = ReplyStatus::kTimeout;
  copy_text(out.message, "rank " + std::to_string(rank().value) + " (pid " +
                             std::to_string(process_->pid()) + ") did not answer within " +
                             std::to_string(waited) + " ms");
}

}  // namespace kvpager::tp
