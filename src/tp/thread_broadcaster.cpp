// thread: one long-lived thread per rank over UNIX sockets (the seed's thread pool). A
// broadcast hands the command to every rank's thread and waits until all have their reply.
#include <bit>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kvpager/tp/broadcaster.hpp"

namespace kvpager::tp {

namespace {

class ThreadBroadcaster final : public Broadcaster {
 public:
  explicit ThreadBroadcaster(Links links) : links_(links) {
    threads_.reserve(links_.size());
    for (size_t r = 0; r < links_.size(); ++r) threads_.emplace_back([this, r] { serve(r); });
  }

  ~ThreadBroadcaster() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void broadcast(const Command& command, RankMask ranks, std::span<Reply> replies,
                 Clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    command_ = &command;
    replies_ = replies;
    deadline_ = deadline;
    ranks_ = ranks;
    remaining_ = std::popcount(ranks);
    ++generation_;
    work_.notify_all();
    done_.wait(lock, [&] { return remaining_ == 0; });
  }

 private:
  void serve(size_t rank) {
    uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      work_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if ((ranks_ >> rank & 1) == 0) continue;
      const Command* command = command_;
      Reply* reply = &replies_[rank];
      const auto deadline = deadline_;
      lock.unlock();
      links_[rank]->post(*command);
      links_[rank]->await(*reply, deadline);
      lock.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  Links links_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  const Command* command_ = nullptr;
  std::span<Reply> replies_;
  Clock::time_point deadline_;
  RankMask ranks_ = 0;
  int remaining_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<Broadcaster> make_thread_broadcaster(Links links) {
  return std::make_unique<ThreadBroadcaster>(links);
}

}  // namespace kvpager::tp
