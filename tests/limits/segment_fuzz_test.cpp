// Property test of the segment decoders: whatever bytes sit under the prefix (truncated,
// bit-flipped, of another version, random), decoding never crashes, never reads outside the
// buffer (ASan run), and whatever it accepts satisfies the format's invariants. Garbage in the
// device segment's mutex never makes a locker hang or crash: it takes the lock, times out or
// refuses the segment, within the lock timeout.
// CI: 4000 bit-flipped copies of each segment and 2000 noise buffers. By hand, for longer
// (counts in docs/benchmarks.md): KVPAGER_FUZZ_SEGMENTS=400000
// build/tests/limits/limits_segment_fuzz_test
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <sys/syscall.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>

#include "kvpager/common/error.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry.hpp"
#include "kvpager/limits/robust_mutex.hpp"
#include "kvpager/limits/segment_decoder.hpp"
#include "kvpager/limits/segment_format.hpp"
#include "limits/registry_test_support.hpp"

using namespace kvpager;
using namespace kvpager::limits;
using namespace kvpager::testing;

namespace {

// A real, live pair of segments to mutate.
struct Segments {
  FileCopy instance, device;
};

Segments real_segments(ScopedRegistry& reg, std::shared_ptr<InstanceRegistration>* keep) {
  InstanceSpec spec{"fuzz-a", "model-x", "host0", 1ull << 30, 64 << 20};
  *keep = InstanceRegistration::create(reg.config, spec);
  EXPECT_TRUE((*keep)->try_charge(4 << 20));
  std::string why;
  auto i = read_file_copy(reg.path("inst-fuzz-a"), sizeof(format::InstanceSegment), &why);
  auto d = read_file_copy(reg.path("dev-host0"), sizeof(format::DeviceSegment), &why);
  EXPECT_TRUE(i && d) << why;
  return {*i, *d};
}

FileCopy with_size(const FileCopy& base, size_t size) {
  FileCopy c;
  c.words.assign(size / 8 + 1, 0);
  std::memcpy(c.words.data(), base.words.data(), std::min(size, base.size));
  c.size = size;
  return c;
}

void check_invariants(const InstanceRecord& r) {
  EXPECT_TRUE(is_valid_instance_name(r.name));
  EXPECT_TRUE(is_valid_device_label(r.device));
  EXPECT_GT(r.owner.pid, 0);
  EXPECT_LT(r.slot, format::kMaxSlots);
  EXPECT_LT(r.model.size(), format::kNameBytes);
}

void check_invariants(const DeviceRecord& r) {
  EXPECT_TRUE(is_valid_device_label(r.device));
  EXPECT_GT(r.total_bytes, 0u);
  uint64_t sum = 0;
  for (const auto& m : r.members) {
    EXPECT_TRUE(is_valid_instance_name(m.name));
    EXPECT_LT(m.index, format::kMaxSlots);
    EXPECT_GT(m.owner.pid, 0);
    sum += m.charged_bytes;
  }
  EXPECT_EQ(sum, r.charged_bytes);
}

}  // namespace

TEST(SegmentDecoder, AcceptsRealSegments) {
  ScopedRegistry reg("fuzz-real");
  std::shared_ptr<InstanceRegistration> keep;
  const Segments s = real_segments(reg, &keep);
  InstanceRecord i;
  DeviceRecord d;
  std::string why;
  ASSERT_TRUE(decode_instance(s.instance.bytes(), &i, &why)) << why;
  ASSERT_TRUE(decode_device(s.device.bytes(), &d, &why)) << why;
  EXPECT_EQ(i.name, "fuzz-a");
  EXPECT_EQ(i.model, "model-x");
  EXPECT_EQ(i.limit_bytes, 64u << 20);
  EXPECT_EQ(i.mapped_bytes, 4u << 20);
  EXPECT_EQ(d.charged_bytes, 4u << 20);
  ASSERT_EQ(d.members.size(), 1u);
  EXPECT_EQ(d.members[0].name, "fuzz-a");
}

TEST(SegmentDecoder, RefusesEveryTruncationAndExtension) {
  ScopedRegistry reg("fuzz-trunc");
  std::shared_ptr<InstanceRegistration> keep;
  const Segments s = real_segments(reg, &keep);
  std::string why;
  for (size_t n = 0; n < s.instance.size + 16; ++n) {
    if (n == s.instance.size) continue;
    InstanceRecord r;
    EXPECT_FALSE(decode_instance(with_size(s.instance, n).bytes(), &r, &why)) << n;
    EXPECT_FALSE(why.empty());
  }
  for (size_t n = 0; n < s.device.size + 16; n += 7) {
    if (n == s.device.size) continue;
    DeviceRecord r;
    EXPECT_FALSE(decode_device(with_size(s.device, n).bytes(), &r, &why)) << n;
  }
}

TEST(SegmentDecoder, RefusesOtherVersionsAndForeignMagic) {
  ScopedRegistry reg("fuzz-version");
  std::shared_ptr<InstanceRegistration> keep;
  Segments s = real_segments(reg, &keep);
  auto* h = reinterpret_cast<format::SegmentHeader*>(s.instance.words.data());
  h->version = format::kVersion + 1;
  InstanceRecord r;
  std::string why;
  EXPECT_FALSE(decode_instance(s.instance.bytes(), &r, &why));
  EXPECT_NE(why.find("version " + std::to_string(format::kVersion + 1)), std::string::npos) << why;
  h->version = 1;  // the format before guarantees: refused, not misread
  EXPECT_FALSE(decode_instance(s.instance.bytes(), &r, &why));
  h->version = format::kVersion;
  h->magic[0] = 'X';
  EXPECT_FALSE(decode_instance(s.instance.bytes(), &r, &why));
  EXPECT_NE(why.find("magic"), std::string::npos) << why;
  DeviceRecord d;  // an instance segment is not a device segment, and vice versa
  h->magic[0] = 'K';
  EXPECT_FALSE(decode_device(with_size(s.instance, s.device.size).bytes(), &d, &why));
}

TEST(SegmentDecoder, RandomCorruptionNeverCrashesAndAcceptedRecordsAreSane) {
  ScopedRegistry reg("fuzz-random");
  std::shared_ptr<InstanceRegistration> keep;
  const Segments s = real_segments(reg, &keep);
  std::mt19937_64 rng(20261125);
  const char* env = std::getenv("KVPAGER_FUZZ_SEGMENTS");
  const size_t tries = env != nullptr ? std::strtoull(env, nullptr, 10) : 4000;
  ASSERT_GE(tries, 2u) << "KVPAGER_FUZZ_SEGMENTS";
  size_t accepted_i = 0, accepted_d = 0;
  for (size_t iter = 0; iter < tries; ++iter) {
    FileCopy i = s.instance, d = s.device;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      reinterpret_cast<unsigned char*>(i.words.data())[rng() % i.size] ^=
          static_cast<unsigned char>(1u << (rng() % 8));
      reinterpret_cast<unsigned char*>(d.words.data())[rng() % d.size] =
          static_cast<unsigned char>(rng());
    }
    InstanceRecord ri;
    DeviceRecord rd;
    std::string why;
    if (decode_instance(i.bytes(), &ri, &why)) {
      ++accepted_i;
      check_invariants(ri);
    }
    if (decode_device(d.bytes(), &rd, &why)) {
      ++accepted_d;
      check_invariants(rd);
    }
  }
  // Flips in the live counters are legitimately accepted; flips in the header are not.
  EXPECT_GT(accepted_i, 0u);
  EXPECT_LT(accepted_i, tries);
  EXPECT_LT(accepted_d, tries);
  for (size_t iter = 0; iter < tries / 2; ++iter) {  // pure noise of every length
    FileCopy noise;
    noise.size = rng() % (sizeof(format::DeviceSegment) + 64);
    noise.words.resize(noise.size / 8 + 1);
    for (auto& w : noise.words) w = rng();
    InstanceRecord ri;
    DeviceRecord rd;
    std::string why;
    EXPECT_FALSE(decode_instance(noise.bytes(), &ri, &why));
    EXPECT_FALSE(decode_device(noise.bytes(), &rd, &why));
  }
  std::cout << "segment fuzz: " << tries
            << " corrupted copies of each segment (accepted: " << accepted_i << " instance, "
            << accepted_d << " device, all sane), " << tries / 2
            << " noise buffers (all refused)\n";
}

TEST(RegistryScan, ReportsAndSkipsSegmentsItCannotTrust) {
  ScopedRegistry reg("fuzz-scan");
  std::shared_ptr<InstanceRegistration> keep;
  const Segments s = real_segments(reg, &keep);
  auto write = [&](const std::string& rest, const void* data, size_t n) {
    const int fd = ::open(reg.path(rest).c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data, n), static_cast<ssize_t>(n));
    ::close(fd);
  };
  write("inst-truncated", s.instance.words.data(), 100);
  FileCopy v2 = s.instance;
  reinterpret_cast<format::SegmentHeader*>(v2.words.data())->version = 7;
  write("inst-future", v2.words.data(), v2.size);
  std::string noise(3000, '\0');
  std::mt19937 rng(7);
  for (auto& c : noise) c = static_cast<char>(rng());
  write("inst-noise", noise.data(), noise.size());
  write("dev-cuda9", noise.data(), noise.size());
  write("something-else", "hello", 5);
  write("inst-renamed", s.instance.words.data(), s.instance.size);  // names fuzz-a inside

  const RegistrySnapshot snap = Registry(reg.config).scan();
  ASSERT_EQ(snap.instances.size(), 1u);
  EXPECT_EQ(snap.instances[0].record.name, "fuzz-a");
  EXPECT_TRUE(snap.instances[0].alive);
  ASSERT_EQ(snap.devices.size(), 1u);
  EXPECT_EQ(snap.skipped.size(), 6u);
  for (const auto& k : snap.skipped) EXPECT_FALSE(k.reason.empty()) << k.path;
}

TEST(DeviceSegmentLock, GarbageInTheMutexNeverHangsOrCrashesALocker) {
  ScopedRegistry reg("fuzz-lock");
  reg.config.lock_timeout = std::chrono::milliseconds(10);
  DeviceBudget device = DeviceBudget::open_or_create(reg.config, "host0", 1ull << 30);
  // The segment's other words, as a second process would see them.
  ShmFile view = ShmFile::open_mapped(reg.path("dev-host0"), sizeof(format::DeviceSegment), true);
  auto* seg = static_cast<format::DeviceSegment*>(view.data());
  auto* bytes = reinterpret_cast<unsigned char*>(device.mutex());
  const int32_t self_tid = static_cast<int32_t>(::syscall(SYS_gettid));
  std::mt19937_64 rng(20261202);
  size_t taken = 0, timed_out = 0, refused = 0;
  for (int iter = 0; iter < 300; ++iter) {
    init_robust_mutex(device.mutex());
    int32_t word = static_cast<int32_t>(rng());
    switch (iter % 6) {
      case 0:
        word = self_tid;
        break;  // "held by this very thread"
      case 1:
        word = static_cast<int32_t>(0x40000000 | (rng() & 0x3fffffff));
        break;  // died
      case 2:
        word &= 0x3fffffff;
        break;  // a thread that does not exist
      default:
        break;
    }
    std::memcpy(bytes, &word, sizeof word);  // glibc's lock word: the mutex's first int
    if (iter % 3 == 0) {  // every other word too (the type word is checked before use)
      for (size_t i = sizeof word; i < sizeof(pthread_mutex_t); ++i) {
        bytes[i] = static_cast<unsigned char>(rng());
      }
    }
    seg->lock_holder_pid.store(static_cast<int32_t>(rng()));
    seg->lock_held_since_ns.store(rng());
    const auto t0 = std::chrono::steady_clock::now();
    try {
      device.reclaim_dead();
      ++taken;
    } catch (const Timeout& e) {
      ++timed_out;
      EXPECT_NE(std::string(e.what()).find("KVPAGER_LOCK_TIMEOUT_MS"), std::string::npos);
    } catch (const StateError& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << iter;
  }
  EXPECT_GT(taken, 0u);  // e.g. a "dead owner" word is recovered
  EXPECT_GT(timed_out, 0u);
  EXPECT_GT(refused, 0u);  // a garbage type word
  init_robust_mutex(device.mutex());
  device.reclaim_dead();  // a sound lock works again
}
