"""kvpager.integrations.policy: the engine-independent decisions both engine adapters carry out.

Table-driven: each row is a state snapshot (numbers) and the decision the policy must take.
Needs neither an engine nor a GPU: CI runs it with Debian's python3.
"""

import time
from types import SimpleNamespace

import pytest

from kvpager.integrations import policy

pytestmark = pytest.mark.filterwarnings("error")


def stats(**kw):
    base = {
        "owed_bytes": 0, "available_within_limit_blocks": 0, "available_blocks": 0,
        "mapped_bytes": 0, "guarantee_bytes": 0, "limit_bytes": 0, "in_use_bytes": 0,
        "pool": {"ready_bytes": kw.pop("ready_bytes", 0)},
    }
    base.update(kw)
    return base


# ---- readings (KvCache.stats() snapshots)

@pytest.mark.parametrize("snapshot, expected", [
    (stats(), False),                                                          # nobody holds any
    (stats(available_within_limit_blocks=8, available_blocks=8), False),       # all of it is ours
    (stats(available_within_limit_blocks=8, available_blocks=3), True),        # others hold 5
    (stats(available_within_limit_blocks=8, available_blocks=3, owed_bytes=1), False),  # we owe
])
def test_others_hold_room(snapshot, expected):
    assert policy.others_hold_room(snapshot) is expected


@pytest.mark.parametrize("snapshot, expected", [
    (stats(guarantee_bytes=0, available_within_limit_blocks=8), False),        # no guarantee
    (stats(guarantee_bytes=100, mapped_bytes=60, available_within_limit_blocks=8), True),
    (stats(guarantee_bytes=100, mapped_bytes=60, ready_bytes=40,
           available_within_limit_blocks=8), False),                        # ready handles count
    (stats(guarantee_bytes=100, mapped_bytes=60, available_within_limit_blocks=8,
           available_blocks=8), False),                                     # nothing to take back
])
def test_short_of_guarantee(snapshot, expected):
    assert policy.short_of_guarantee(snapshot) is expected


@pytest.mark.parametrize("snapshot, block_bytes, expected", [
    (stats(), 10, 0),
    (stats(owed_bytes=1), 10, 1),                                    # rounded up to a block
    (stats(owed_bytes=30), 10, 3),
    (stats(limit_bytes=100, in_use_bytes=125), 10, 3),               # a lowered limit: 25 B over
    (stats(limit_bytes=100, in_use_bytes=125, owed_bytes=50), 10, 5),  # the larger of the two
    (stats(limit_bytes=0, in_use_bytes=125), 10, 0),                 # no limit
    (stats(limit_bytes=200, in_use_bytes=125), 10, 0),               # under the limit
])
def test_debt_blocks(snapshot, block_bytes, expected):
    assert policy.debt_blocks(snapshot, block_bytes) == expected


def test_a_missing_statistic_is_a_key_error():
    with pytest.raises(KeyError):
        policy.debt_blocks({"owed_bytes": 0}, 16)


# ---- scheduling decisions

@pytest.mark.parametrize("available, staged, cached, owed, expected", [
    (5, 2, 3, 0, 10),
    (5, 2, 3, 9, 10),    # the debt counts only while kvpager hands out nothing
    (0, 2, 3, 0, 5),
    (0, 2, 3, 9, -4),    # below zero: the engine's preemption pays it in one pass
])
def test_free_blocks_seen(available, staged, cached, owed, expected):
    assert policy.free_blocks_seen(available, staged, cached, owed) == expected


@pytest.mark.parametrize("need, staged, available, cached, expected", [
    (4, 0, 4, 9, 0),     # kvpager has them
    (4, 3, 1, 0, 0),     # staged ones count
    (4, 0, 1, 3, 3),     # evict exactly what is missing
    (4, 0, 1, 2, None),  # even all cached would not do: evict none, wait
    (0, 0, 0, 0, 0),
])
def test_cached_blocks_to_evict(need, staged, available, cached, expected):
    assert policy.cached_blocks_to_evict(need, staged, available, cached) == expected


@pytest.mark.parametrize("starved_need, starved, running, free, expected", [
    (10, 2, 3, 4, True),
    (10, 2, 3, 10, False),   # the demand fits
    (10, 2, 1, 4, False),    # the last running request is never taken
    (0, 0, 3, 4, False),     # nobody starved
    (10, 2, 3, -3, True),    # a debt makes the free count negative
])
def test_offloading_would_help(starved_need, starved, running, free, expected):
    assert policy.offloading_would_help(starved_need, starved, running, free) is expected


@pytest.mark.parametrize("owed, refused, others, expected", [
    (3, False, False, policy.WAIT_FOR_DEBT),
    (3, True, True, policy.WAIT_FOR_DEBT),        # the debt comes first
    (0, True, False, policy.ASK_AND_WAIT),        # counted free, taken meanwhile by another
    (0, False, True, policy.ASK_AND_WAIT),        # others hold room within our limit
    (0, False, False, policy.ENGINE_DECIDES),     # full of our own: as stock memory
])
def test_after_empty_pass(owed, refused, others, expected):
    assert policy.after_empty_pass(owed, refused, others) == expected


@pytest.mark.parametrize("denied, owed, others, expected", [
    (False, 5, True, False),
    (True, 0, False, False),   # refused for a full cache of its own: not a wait for others
    (True, 2, False, True),
    (True, 0, True, True),
])
def test_held_back(denied, owed, others, expected):
    assert policy.held_back(denied, owed, others) is expected


# ---- claims

@pytest.mark.parametrize("tokens, block_size, expected", [
    (0, 16, 0), (1, 16, 1), (16, 16, 1), (17, 16, 2),
])
def test_blocks_for_tokens(tokens, block_size, expected):
    assert policy.blocks_for_tokens(tokens, block_size) == expected


@pytest.mark.parametrize("request_blocks, margin, capacity, expected", [
    (3, 0.0, 100, 4),
    (3, None, 100, 4),     # an engine without a margin
    (3, 0.2, 100, 24),
    (3, 0.2, 7, 5),        # int(1.4)
])
def test_waiting_claim_blocks(request_blocks, margin, capacity, expected):
    assert policy.waiting_claim_blocks(request_blocks, margin, capacity) == expected


def test_throttle_and_room_asker_ask_at_a_bounded_rate():
    asked = []
    kv = SimpleNamespace(ask_for_room=asked.append)
    asker = policy.RoomAsker(kv, interval_s=0.05)
    assert asker.due() and asker.ask(0)           # one block at least
    assert not asker.due() and not asker.ask(7)   # too soon
    time.sleep(0.06)
    assert asker.ask(7)
    assert asked == [1, 7]
    throttle = policy.Throttle(60)
    assert throttle.take() and not throttle.take()


# ---- paying a debt

@pytest.mark.parametrize("owed, cached, running, can_offload, expected", [
    (0, 5, 3, True, policy.Payment("none")),
    (4, 9, 3, True, policy.Payment("cache", 4)),       # the prefix cache pays first
    (4, 2, 3, True, policy.Payment("cache", 2)),       # what it has; offloading next pass
    (4, 0, 3, True, policy.Payment("offload", 4)),
    (4, 0, 1, True, policy.Payment("none")),           # never the last running request
    (4, 0, 3, False, policy.Payment("none")),          # no way to preempt
])
def test_debt_payment(owed, cached, running, can_offload, expected):
    assert policy.debt_payment(owed, cached, running, can_offload) == expected


# 12 blocks of 100 B, pages of 400 B (4 blocks each: 0-3, 4-7, 8-11)
@pytest.mark.parametrize("cached_lru, held_ids, expected", [
    ([], {0}, []),
    # page 1 wholly cached; page 0 also holds block 0 (in use): not whole
    ([1, 2, 3, 4, 5, 6, 7], {0, 1, 2, 3, 4, 5, 6, 7}, [[4, 5, 6, 7]]),
    # both whole; page 2's newest block is older than page 1's: page 2 first
    ([4, 8, 9, 5], {4, 5, 8, 9}, [[8, 9], [4, 5]]),
    # unheld blocks of a page do not stop it emptying
    ([9], {9}, [[9]]),
])
def test_whole_cached_pages(cached_lru, held_ids, expected):
    held = bytearray(12)
    for i in held_ids:
        held[i] = 1
    assert policy.whole_cached_pages(cached_lru, held, 100, 400, 12) == expected


def test_whole_cached_pages_with_blocks_straddling_pages():
    # blocks of 300 B, pages of 400 B: block 1 (300-600) starts in page 0 but lies wholly in
    # none; page 0 holds block 0 wholly, page 1 none
    held = bytearray([1, 1, 0, 0])
    assert policy.whole_cached_pages([0], held, 300, 400, 4) == [[0]]
    assert policy.whole_cached_pages([0, 1], held, 300, 400, 4) == []


@pytest.mark.parametrize("pages, owed, per_page, expected", [
    ([[1, 2], [3, 4], [5]], 0, 2, ([], 0)),
    ([[1, 2], [3, 4], [5]], 3, 2, ([[1, 2], [3, 4]], 0)),   # whole pages, possibly more
    ([[1, 2]], 5, 2, ([[1, 2]], 3)),                      # still owed: the engine preempts
    ([], 2, 2, ([], 2)),
])
def test_pages_to_pay(pages, owed, per_page, expected):
    assert policy.pages_to_pay(pages, owed, per_page) == expected


@pytest.mark.parametrize("cached, per_page, keep, expected", [
    (100, 4, 0, 16),    # four pages' worth at least
    (400, 4, 0, 50),    # an eighth
    (10, 4, 0, 10),     # at most all
    (100, 4, 30, 16),   # the blocks beyond those kept are more than a step: one step
    (40, 4, 30, 8),     # 10 beyond those kept: two whole pages, not a third cut into them
    (30, 4, 30, 0),     # nothing beyond those kept
    (20, 4, 30, 0),
])
def test_pressure_shed_blocks_keeps_the_recent_demand_in_whole_pages(cached, per_page, keep,
                                                                     expected):
    assert policy.pressure_shed_blocks(cached, per_page, keep) == expected


def test_recent_demand_is_the_largest_allocation_within_its_window():
    demand = policy.RecentDemand(10.0)
    assert demand.blocks(0.0) == 0
    demand.note(5, 1.0)
    demand.note(30, 2.0)
    demand.note(7, 9.0)
    assert demand.blocks(9.5) == 30
    demand.note(4, 12.0)  # the next bucket: the previous one's largest still counts
    assert demand.blocks(15.0) == 30
    assert demand.blocks(19.9) == 30  # 17.9 s after the 30: within twice the window
    assert demand.blocks(20.0) == 4  # the 30's bucket is two back now
    assert demand.blocks(41.0) == 0  # nothing within a window: an idle engine keeps nothing
    off = policy.RecentDemand(0)
    off.note(50, 1.0)
    assert off.blocks(1.0) == 0


@pytest.mark.parametrize("call", [
    lambda: policy.pages_to_pay([[1]], 1, 0),
    lambda: policy.whole_cached_pages([1], bytearray(2), 0, 400, 2),
    lambda: policy.pressure_shed_blocks(10, 0),
    lambda: policy.RecentDemand(-1.0),
    lambda: policy.RecentDemand(float("nan")),
    lambda: policy.RecentDemand(1e-310),  # its bucket index would overflow
])
def test_bad_sizes_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


# ---- wait spans and internals

def test_wait_spans_join_consecutive_held_back_passes():
    waits = policy.WaitSpans()
    for held in (False, True, True, False, True):
        waits.note(held)
    spans = waits.spans()
    assert len(spans) == 2 and all(seconds >= 0 for _, seconds in spans)
    assert spans[0][0] < spans[1][0]


class _Internal:
    def method(self):
        return 1


def test_check_internals_names_what_moved_in_one_line():
    real = {"Internal.method": policy.fingerprint(_Internal.method)}
    resolve = {"Internal.method": _Internal.method}.__getitem__
    policy.check_internals(real, resolve, integration="it", engine="eng", written_for="1",
                           version="2", error=RuntimeError)
    with pytest.raises(RuntimeError, match=r"source of Internal\.method changed"):
        policy.check_internals({"Internal.method": "0" * 16}, resolve, integration="it",
                               engine="eng", written_for="1", version="2", error=RuntimeError)
    with pytest.raises(RuntimeError, match=r"has no Gone\.attr"):
        policy.check_internals({"Gone.attr": "0" * 16}, resolve, integration="it",
                               engine="eng", written_for="1", version="2", error=RuntimeError)


def test_patches_restore_the_originals_last_first():
    owner = SimpleNamespace(a=1)
    patches = policy.Patches()
    assert patches.set(owner, "a", 2) == 1
    patches.set(owner, "a", 3)
    assert owner.a == 3 and patches
    patches.restore()
    assert owner.a == 1 and not patches
