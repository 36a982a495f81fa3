// DeviceLock across processes: mutual exclusion, and recovery when a holder dies.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvpager/tp/device_lock.hpp"

namespace kvpager::tp {
namespace {

using namespace std::chrono_literals;

TEST(TpDeviceLock, AHolderThatDiesDoesNotBlockTheOthers) {
  DeviceLock lock;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    lock.lock(0ns);
    ::_exit(0);  // dies holding it
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  lock.lock(10us);  // recovers EOWNERDEAD
  lock.unlock();
  lock.lock(0ns);
  lock.unlock();
}

TEST(TpDeviceLock, ProcessesTakeTurns) {
  DeviceLock lock;
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  lock.lock(0ns);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    lock.lock(5us);  // blocks until the parent unlocks
    const char c = 'x';
    (void)!::write(pipe_fds[1], &c, 1);
    lock.unlock();
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  ::usleep(20000);
  char c = 0;
  // Nothing written while the parent holds the lock.
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  EXPECT_EQ(::read(pipe_fds[0], &c, 1), -1);
  lock.unlock();
  ::fcntl(pipe_fds[0], F_SETFL, 0);
  EXPECT_EQ(::read(pipe_fds[0], &c, 1), 1);
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace kvpager::tp
