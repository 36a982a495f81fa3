#include "kvpager/tp/rank_link.hpp"

namespace kvpager::tp {

void RankLink::drop() {
  if (process_) {
    process_->kill_and_reap();
  } else if (!dropped_) {
    close_channel();
  }
  dropped_ = true;
}

bool RankLink::gone() {
  return process_ ? process_->exited() : dropped_;
}

void RankLink::wait_gone(std::chrono::milliseconds limit) {
  if (process_) process_->wait_exit(limit);
}

void RankLink::fail_died(Reply& out, const char* when) {
  std::string what = "is gone";  // a connected rank: its process is not ours to wait for
  if (process_) {
    // The channel closes a moment before the kernel reports the exit: give it that moment.
    process_->wait_exit(std::chrono::milliseconds(200));
    what = process_->exit_description();
  }
  out.seq = seq_;
  out.status = ReplyStatus::kDied;
  copy_text(out.message, "rank " + std::to_string(rank().value) + " (pid " + std::to_string(pid_) +
                             ") " + what + " " + when);
}

void RankLink::fail_timeout(Reply& out) {
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - posted_at_).count();
  out.seq = seq_;
  out.status = ReplyStatus::kTimeout;
  copy_text(out.message, "rank " + std::to_string(rank().value) + " (pid " + std::to_string(pid_) +
                             ") did not answer within " + std::to_string(waited) + " ms");
}

}  // namespace kvpager::tp
