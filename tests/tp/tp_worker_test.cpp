// The worker side in-process: its command line round trip, and the CommandExecutor's
// all-or-nothing map/unmap of a page list on the host backend.
#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/command_executor.hpp"
#include "kvpager/tp/tp_worker.hpp"
#include "tp/tp_test_support.hpp"

namespace kvpager::tp {
namespace {

Command command(CommandKind kind, std::initializer_list<uint32_t> pages) {
  Command c;
  c.kind = kind;
  c.count = 0;
  for (uint32_t p : pages) c.pages[c.count++] = p;
  return c;
}

TEST(TpWorkerCommandLine, RoundTrips) {
  WorkerLaunch l;
  l.rank = RankId(3);
  l.transport = Transport::kSocket;
  l.parent_pid = 4242;
  l.config = testing::small_tp_config("seq", 4).worker;
  l.config.layout = kv::KvLayout::kPerLayer;
  l.config.backend.device = 3;
  l.config.pool = false;
  l.config.background_refill = true;
  l.fault = FaultSpec{3, vmm::BackendOp::kSetAccess, 2};
  auto args = worker_command_line(l);
  ASSERT_GE(args.size(), 2u);
  EXPECT_EQ(args[1], "tp-worker");
  const WorkerLaunch back = parse_worker_command_line({args.begin() + 2, args.end()});
  EXPECT_EQ(back.rank, l.rank);
  EXPECT_EQ(back.transport, l.transport);
  EXPECT_EQ(back.parent_pid, l.parent_pid);
  EXPECT_EQ(back.config.backend.device, 3);
  EXPECT_EQ(back.config.backend.host_granularity, l.config.backend.host_granularity);
  EXPECT_EQ(back.config.geometry.num_layers, l.config.geometry.num_layers);
  EXPECT_EQ(back.config.layout, kv::KvLayout::kPerLayer);
  EXPECT_EQ(back.config.virtual_bytes, l.config.virtual_bytes);
  EXPECT_FALSE(back.config.pool);
  EXPECT_TRUE(back.config.background_refill);
  EXPECT_EQ(back.fault.rank, 3);
  EXPECT_EQ(back.fault.op, vmm::BackendOp::kSetAccess);
  EXPECT_EQ(back.fault.nth_call, 2);
  EXPECT_THROW(parse_worker_command_line({"--bogus", "1"}), InvalidArgument);
  EXPECT_THROW(parse_fault("map:0", 1), InvalidArgument);
  // numbers are digits only: std::stoi read "1x" as 1 and std::stoull "-1" as 2^64-1
  EXPECT_THROW(parse_fault("map:1x", 1), InvalidArgument);
  EXPECT_THROW(parse_fault("map: 2", 1), InvalidArgument);
  EXPECT_EQ(parse_fault("unmap:12", 1).nth_call, 12);
  EXPECT_THROW(parse_worker_command_line({"--rank", "-1"}), InvalidArgument);
  EXPECT_THROW(parse_worker_command_line({"--rank", "2x"}), InvalidArgument);
}

TEST(TpCommandExecutor, MapsAndUnmapsAllOrNothing) {
  WorkerConfig wc = testing::small_tp_config("shm", 1).worker;
  CommandExecutor ex(wc, FaultSpec{0, vmm::BackendOp::kMap, 3});  // the 3rd map call fails
  Reply hello;
  ex.hello(hello);
  EXPECT_EQ(hello.status, ReplyStatus::kOk);
  EXPECT_EQ(hello.num_pages, 64u);

  Reply r;
  ex.execute(command(CommandKind::kMap, {1, 2}), r);
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  EXPECT_EQ(r.mapped_pages, 2u);
  ex.execute(command(CommandKind::kMap, {3, 4}), r);  // page 3 maps, page 4 fails: 3 undone
  EXPECT_EQ(r.status, ReplyStatus::kDriverError);
  EXPECT_STREQ(r.call, "map");
  EXPECT_EQ(r.mapped_pages, 2u);
  EXPECT_EQ(ex.space().state(PageId(3)), kv::PageState::kReserved);

  ex.execute(command(CommandKind::kMap, {5, 64}), r);  // out of range: nothing mapped
  EXPECT_EQ(r.status, ReplyStatus::kInvalidArgument);
  EXPECT_EQ(ex.space().state(PageId(5)), kv::PageState::kReserved);

  ex.execute(command(CommandKind::kUnmap, {2, 9}), r);  // 9 is not mapped: 2 is re-mapped
  EXPECT_EQ(r.status, ReplyStatus::kInvalidArgument);
  EXPECT_EQ(ex.space().state(PageId(2)), kv::PageState::kMapped);

  ex.execute(command(CommandKind::kQuery, {}), r);
  const uint32_t mapped[] = {1, 2};
  EXPECT_EQ(r.state_checksum, page_state_checksum(mapped));
  EXPECT_NE(r.state_checksum, page_state_checksum({}));
}

TEST(TpCommandExecutor, NoPoolCreatesInsideMapAndReleasesInsideUnmap) {
  WorkerConfig wc = testing::small_tp_config("shm", 1).worker;
  wc.pool = false;
  CommandExecutor ex(wc, FaultSpec{});
  Reply r;
  ex.execute(command(CommandKind::kMap, {0}), r);
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  ex.execute(command(CommandKind::kUnmap, {0}), r);
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
}

}  // namespace
}  // namespace kvpager::tp
