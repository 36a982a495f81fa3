#include "kvpager/tp/rank_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/command_loop.hpp"
#include "kvpager/tp/unix_channel.hpp"

namespace kvpager::tp {

RankServer::RankServer(RankServerConfig config)
    : config_(std::move(config)), channel_(rank_channel_name(config_.token, config_.rank)) {
  executor_ = std::make_unique<CommandExecutor>(config_.worker, config_.fault);
  listen_fd_ = listen_channel(channel_);
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_.valid()) throw_errno("eventfd", errno, "tp rank server " + channel_);
  thread_ = std::thread([this] { run(); });
}

RankServer::~RankServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (session_fd_ >= 0) ::shutdown(session_fd_, SHUT_RDWR);  // the loop's recv returns 0
  }
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

std::string RankServer::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void RankServer::run_local(CommandKind kind, std::span<const PageId> pages) {
  if (pages.size() > kMaxPagesPerCommand) {
    throw InvalidArgument("tp rank " + std::to_string(config_.rank.value) + ": " +
                          std::to_string(pages.size()) + " pages at once (at most " +
                          std::to_string(kMaxPagesPerCommand) + ")");
  }
  const auto command = std::make_unique<Command>();
  command->kind = kind;
  command->count = static_cast<uint32_t>(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) command->pages[i] = pages[i].value;
  Reply reply;
  {
    std::lock_guard lock(mutex_);
    if (phase_.load() != Phase::kListening) {
      throw StateError("tp rank " + std::to_string(config_.rank.value) +
                       ": a scheduler drives this rank's pages now (or did); local " +
                       command_name(kind) + " is only for the warm-up before it connects");
    }
    executor_->execute(*command, reply);
  }
  if (reply.status != ReplyStatus::kOk) {
    throw_reply_error(reply,
                      "tp rank " + std::to_string(config_.rank.value) + " local " +
                          command_name(kind) + ": " + reply.message,
                      static_cast<int>(config_.rank.value));
  }
}

void RankServer::map_local(std::span<const PageId> pages) {
  run_local(CommandKind::kMap, pages);
}

void RankServer::unmap_local(std::span<const PageId> pages) {
  run_local(CommandKind::kUnmap, pages);
}

UniqueFd RankServer::accept_scheduler() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll", errno, "tp rank server " + channel_);
    }
    if (fds[1].revents != 0) return UniqueFd();
    UniqueFd connection(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection.valid()) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      throw_errno("accept4", errno, "tp rank server " + channel_);
    }
    if (peer_credentials(connection.get()).uid != ::geteuid()) {
      refused_.fetch_add(1);  // another user's process: closed before any message
      continue;
    }
    return connection;
  }
}

void RankServer::serve(UniqueFd connection) {
  Reply hello;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    executor_->hello(hello);
    if (hello.mapped_pages > 0) {
      hello.status = ReplyStatus::kStateError;
      copy_text(hello.message, "rank " + std::to_string(config_.rank.value) + " still holds " +
                                   std::to_string(hello.mapped_pages) +
                                   " page(s) it mapped itself (a warm-up window): the worker "
                                   "must unmap them before a scheduler connects");
    } else {
      phase_.store(Phase::kServing);
      session_fd_ = connection.get();
    }
  }
  if (!send_reply(connection.get(), hello) || hello.status != ReplyStatus::kOk) {
    std::lock_guard lock(mutex_);
    session_fd_ = -1;
    if (hello.status == ReplyStatus::kOk) phase_.store(Phase::kListening);  // gone at once
    return;
  }
  uint64_t served = 0;
  serve_socket(connection.get(), *executor_, &mutex_, &served);
  std::lock_guard lock(mutex_);
  session_fd_ = -1;
  executor_->unmap_all();  // the scheduler is gone: nobody else will free them
  // A scheduler that left without a command (it could not reach every rank, or refused the
  // geometry) was no session: wait for the next one.
  phase_.store(served == 0 && !stopping_ ? Phase::kListening : Phase::kFinished);
}

void RankServer::run() noexcept {
  try {
    executor_->prepare_background_thread();
    while (phase_.load() == Phase::kListening) {
      UniqueFd connection = accept_scheduler();
      if (!connection.valid()) return;
      serve(std::move(connection));
    }
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    error_ = e.what();
  }
  listen_fd_.reset();  // one session per server: later schedulers find nobody listening
}

}  // namespace kvpager::tp
