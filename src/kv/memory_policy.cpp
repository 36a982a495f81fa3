#include "kvpager/kv/memory_policy.hpp"

namespace kvpager::kv {

namespace {

size_t committed(const PageCounts& p) {
  return p.mapped + p.in_transition;
}

// A poll's events: the guarantee and the debt in pages, pressure, and what to release.
void apply_poll(MemoryPolicyState& s, const PageCounts& pages, uint64_t page_bytes,
                const LinkPoll& poll) {
  const limits::LinkEvents& e = poll.events;
  s.keep_pages = static_cast<size_t>(e.keep_bytes / page_bytes);
  s.owed_pages = static_cast<size_t>((e.owed_bytes + page_bytes - 1) / page_bytes);
  // Within its guarantee an instance keeps what it holds: others' pressure is for borrowers.
  // What it holds is its charge, ready handles included (large handles, several of them, can
  // put an instance above its guarantee with few pages mapped).
  const bool shed = e.shed && (pages.mapped > s.keep_pages || poll.charged_bytes > e.keep_bytes);
  if (shed) {
    s.shedding = true;
    s.reserve_suspended = true;  // until the next alloc: the reserve would only be taken back
  }
  if (e.limit_changed || e.shed) {
    s.reserve_blocked = false;
  }
  // Ready handles are charged too: release them once the pages owed or shed are unmapped.
  if (e.limit_changed || shed || e.owed_bytes > 0) {
    s.release_pending = true;
  }
}

}  // namespace

MapperStep decide_mapper_step(const MemoryPolicyConfig& config, MemoryPolicyState s,
                              const MapperInputs& in) noexcept {
  const PageCounts& p = in.pages;
  // Idle: no alloc for idle_release. The pool's ready handles are physical memory the cache
  // does not use; release them once (the next alloc refills the pool).
  if (in.allocs_moved) {
    s.idle_released = false;
  } else if (config.idle_release.count() > 0 && !s.idle_released &&
             in.quiet_for >= config.idle_release) {
    s.idle_released = true;
    s.release_pending = true;
  }
  if (in.poll) {
    apply_poll(s, p, in.page_bytes, *in.poll);
  }
  if (s.shedding && (p.free == 0 || p.mapped <= s.keep_pages)) {
    s.shedding = false;
  }
  // Holding more than the budget allows now (a limit or device budget lowered below the
  // charge): ready handles go first, then free pages down to the guarantee, and no reserve.
  const uint64_t ready = in.excess_bytes > 0 ? in.ready_bytes : 0;
  if (ready > 0) {
    s.release_pending = true;
  }
  const bool shed_excess = in.excess_bytes > ready && p.mapped > s.keep_pages;
  const bool want_unmap = p.free > 0 && (p.free > config.max_idle_pages || committed(p) > p.limit ||
                                         s.shedding || s.owed_pages > 0 || shed_excess);
  const bool want_map = !s.reserve_suspended && !s.reserve_blocked && s.owed_pages == 0 &&
                        in.excess_bytes == 0 && p.free < config.reserve_pages && p.unmapped > 0 &&
                        committed(p) < p.limit;
  MapperStep step;
  if (want_unmap) {
    step.action = MapperAction::kUnmapPage;
    step.pays_debt = s.owed_pages > 0;
  } else if (s.release_pending) {
    s.release_pending = false;
    step.action = MapperAction::kReleaseReady;
  } else if (want_map) {
    step.action = MapperAction::kMapReserve;
  }
  step.state = s;
  return step;
}

bool unmap_due_after_free(const MemoryPolicyConfig& config, const PageCounts& pages) noexcept {
  return pages.free > 0 && (pages.free > config.max_idle_pages || committed(pages) > pages.limit);
}

bool reserve_due_after_alloc(const MemoryPolicyConfig& config, const MemoryPolicyState& state,
                             size_t free_pages, size_t unmapped_pages) noexcept {
  return !state.reserve_blocked && free_pages < config.reserve_pages && unmapped_pages > 0;
}

MemoryPolicyState on_alloc(MemoryPolicyState s) noexcept {
  s.reserve_suspended = false;
  s.shedding = false;
  return s;
}

MemoryPolicyState on_free_or_resize(MemoryPolicyState s) noexcept {
  s.reserve_blocked = false;
  return s;
}

MemoryPolicyState on_trim(MemoryPolicyState s) noexcept {
  s.reserve_suspended = true;
  return s;
}

MemoryPolicyState on_reserve_refused(MemoryPolicyState s) noexcept {
  s.reserve_blocked = true;
  return s;
}

MemoryPolicyState on_debt_page_paid(MemoryPolicyState s) noexcept {
  if (s.owed_pages > 0) {
    --s.owed_pages;
  }
  return s;
}

uint64_t claim_bytes(size_t mapped_pages, size_t more_pages, uint64_t page_bytes,
                     uint64_t charged_bytes) noexcept {
  const uint64_t want = static_cast<uint64_t>(mapped_pages + more_pages) * page_bytes;
  return want > charged_bytes ? want - charged_bytes : 0;
}

size_t owed_blocks(size_t owed_pages, size_t free_pages, uint64_t ready_bytes, uint64_t page_bytes,
                   size_t blocks_per_page) noexcept {
  const size_t covered = free_pages + static_cast<size_t>(ready_bytes / page_bytes);
  return owed_pages > covered ? (owed_pages - covered) * blocks_per_page : 0;
}

}  // namespace kvpager::kv
