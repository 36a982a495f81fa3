#include "kvpager/tp/command_loop.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <string>

namespace kvpager::tp {

bool send_reply(int fd, const Reply& reply) {
  ssize_t n;
  do {
    n = ::send(fd, &reply, sizeof reply, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof reply);
}

LoopEnd serve_socket(int fd, CommandExecutor& executor, std::mutex* guard, uint64_t* served) {
  const auto command = std::make_unique<Command>();  // 4 KiB: not on the stack, once per loop
  Reply reply;
  for (;;) {
    ssize_t n;
    do {
      n = ::recv(fd, command.get(), sizeof *command, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return LoopEnd::kSchedulerGone;
    if (static_cast<size_t>(n) < Command::kHeaderBytes ||
        static_cast<size_t>(n) != command->wire_bytes()) {
      reply = Reply{};
      reply.seq = static_cast<size_t>(n) >= sizeof(uint64_t) ? command->seq : 0;
      reply.status = ReplyStatus::kInvalidArgument;
      copy_text(reply.message, "malformed command of " + std::to_string(n) + " bytes");
    } else if (guard != nullptr) {
      std::lock_guard lock(*guard);
      executor.execute(*command, reply);
    } else {
      executor.execute(*command, reply);
    }
    if (served != nullptr && reply.status != ReplyStatus::kInvalidArgument) ++*served;
    if (!send_reply(fd, reply)) return LoopEnd::kSchedulerGone;
    if (command->kind == CommandKind::kShutdown) return LoopEnd::kShutdown;
  }
}

}  // namespace kvpager::tp
