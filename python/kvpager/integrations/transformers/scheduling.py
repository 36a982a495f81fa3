"""The scheduler hooks: transformers' scheduling passes under a shared device budget.

``_create_batch_processor`` is wrapped (:func:`wrap_create_batch_processor`) so that each batch
processor built on a kvpager cache gets, on its scheduler instance only:

* ``schedule_batch`` wrapped (:func:`_wait_on_refusal`): a pass that scheduled nothing waits
  (an empty batch) instead of failing the generation loop when the room is only held by others
  or owed to them; below its guarantee, waiting requests claim what they need;
* ``clear_cancelled_requests`` wrapped (:func:`_pay_on_every_pass`): an instance that owes pays
  at the start of every pass, busy or idle;
* the cache's unmapping ordered after the engine's compute stream.

What to do is the shared policy's (``integrations.policy``: offloading_would_help,
after_empty_pass, debt_payment, waiting_claim_blocks, held_back); this module reads the numbers
off transformers' scheduler and carries the decisions out with its own OffloadingManager.

Thread safety: the wrappers run on transformers' generation thread. Errors: none of their own;
what transformers raises (a request larger than the instance could ever hold) passes through.
"""

from __future__ import annotations

import functools

from .. import policy
from .paged_cache import cache_class

__all__ = ["wrap_create_batch_processor"]


def _offloading_would_help(scheduler, cache) -> bool:
    """What transformers' OffloadingManager.offload_requests would do with a pass that scheduled
    nothing: evict some request (starved ones, never the last active one) when the starved
    demand exceeds the free blocks."""
    starved = getattr(scheduler, "starved_requests", None) or []
    running = len(getattr(scheduler, "active_requests", {}))
    if not starved or running <= 1:  # the policy's answer without reading the free count
        return False
    return policy.offloading_would_help(sum(need for _, need in starved), len(starved), running,
                                        cache.get_num_free_blocks())


def _waiting_demand(scheduler, cache) -> int:
    """The claim for the oldest waiting request (policy.waiting_claim_blocks): the blocks its
    tokens and the next one need across layer groups, plus transformers' safety margin."""
    waiting = getattr(scheduler, "waiting_requests", None)
    order = getattr(scheduler, "waiting_requests_order", None)
    if not waiting:
        return 0
    state = waiting.get(order[0]) if order else None
    state = state if state is not None else next(iter(waiting.values()))
    tokens = len(state.initial_tokens) + len(getattr(state, "generated_tokens", ())) + 1
    blocks = cache.blocks_needed(policy.blocks_for_tokens(tokens, cache.block_size), 0)
    return policy.waiting_claim_blocks(blocks, getattr(scheduler, "safety_margin", 0.0),
                                       cache.num_blocks)


def _pay_what_is_owed(scheduler, cache, offloader) -> bool:
    """When this instance owes pages to another's claim on its guarantee (KvCache.owed_blocks),
    pays as policy.debt_payment decides: from its prefix cache first (complete blocks no request
    uses, the least recently cached first, worth the debt: nothing is preempted), else by
    offloading (preempting) enough of its newest running requests to pay at once, through
    transformers' own OffloadingManager (CPU swap or soft reset, as when its cache is full):
    requests that need no new block would otherwise hold their pages until they finish. The
    last running request is never taken. Returns whether it freed anything."""
    manager = cache._block_manager
    cached = len(manager._init_block_ids)
    running = len(scheduler.active_requests)
    can_offload = offloader is not None
    if not (cached or (can_offload and running > 1)):
        return False  # nothing could pay: spare the debt's read
    payment = policy.debt_payment(cache.kv.owed_blocks(), cached, running, can_offload)
    if payment.source == "cache":
        return manager.release_cached(limit=payment.blocks) > 0
    if payment.source != "offload":
        return False
    # offload_requests evicts from the end of the starved list (newest first) until the demand
    # (0 here) fits the free blocks, which read below zero (minus what is owed) meanwhile.
    scheduler.starved_requests = [(state, 0) for state in scheduler.active_requests.values()]
    blocked = scheduler.block_new_requests
    try:
        return offloader.offload_requests() > 0
    finally:
        scheduler.starved_requests = []
        # offload_requests stops admitting waiting requests (the offloaded ones too) until a
        # running request finishes: right when its own cache is full, not for a debt. Here the
        # free count already reads minus the debt, so nothing is admitted until it is paid,
        # and the offloaded requests come back as soon as the room does (not seconds later,
        # when a long request ends).
        scheduler.block_new_requests = blocked


def _pay_on_every_pass(clear_cancelled_requests, scheduler, cache, offloader):
    """Wraps a scheduler's clear_cancelled_requests, which the generation loop calls at the start
    of every pass, busy or idle (it polls every 0.1 s while no request is pending), right before
    scheduling: an instance that owes pays there (_pay_what_is_owed), at most once per 20 ms
    after a payment, since unmapping what a payment freed takes a mapper poll. An idle instance
    holding a prefix cache has no other pass in which to pay."""
    paid = policy.Throttle(0.02)

    @functools.wraps(clear_cancelled_requests)
    def wrapped(*args, **kwargs):
        out = clear_cancelled_requests(*args, **kwargs)
        if paid.due() and _pay_what_is_owed(scheduler, cache, offloader):
            paid.mark()
        return out

    return wrapped


def _wait_on_refusal(schedule_batch, scheduler, cache, offloader=None):
    """Wraps a scheduler's schedule_batch. A pass that scheduled nothing (None: "the cache is
    full") makes transformers offload requests, or raise 'No requests can be scheduled and no
    requests can be offloaded' when it has nothing to offload (a lone request, or only waiting
    ones). Under a device budget shared with other processes the cache is only full for now:
    they hold the room and will give it back. So when offloading cannot help, the pass does what
    policy.after_empty_pass says: while it owes, or when kvpager refused blocks it had counted
    as free (another process took them meanwhile) or the blocks within this instance's own
    limit are held by others, it returns an empty batch: the loop waits and schedules again. A
    request larger than the instance could ever hold still raises, as with stock memory.

    When offloading can help, the wrapper offloads itself (transformers' own offload_requests)
    and schedules again, as transformers' loop would. The free count can rise between the check
    and the offload: the mapper pays a debt meanwhile, and the count reads minus the debt. An
    offload that then finds nothing to evict makes an empty batch (schedule again), where
    transformers would raise.

    With a guarantee (KvpagerOptions.guarantee_bytes), requests left waiting while the instance
    holds less than its share claim what they need of it (ask_for_room) even when the pass
    scheduled others: borrowers then stop growing into it and give that much back
    (_pay_on_every_pass)."""
    manager = cache._block_manager

    def wait(out):
        manager.note_held_back(True)
        return ([], *out[1:])

    @functools.wraps(schedule_batch)
    def wrapped(*args, **kwargs):
        before = manager.refusals
        manager.wanted = 0
        may_ask = manager.may_ask()
        out = schedule_batch(*args, **kwargs)
        denied = manager.wanted > 0  # a request was refused blocks in this pass
        waiting = getattr(scheduler, "waiting_requests", None)
        if waiting and may_ask and manager.short_of_guarantee():
            manager.wanted = max(manager.wanted, _waiting_demand(scheduler, cache))
            manager.ask_for_room()
        while out[0] is None and offloader is not None and _offloading_would_help(scheduler, cache):
            if offloader.offload_requests() == 0:
                return wait(out)
            out = schedule_batch(*args, **kwargs)
        if out[0] is None and not _offloading_would_help(scheduler, cache):
            owed = cache.kv.owed_blocks()
            refused = manager.refusals != before
            action = policy.after_empty_pass(owed, refused, owed == 0 and not refused
                                             and manager.others_hold_room())
            if action == policy.WAIT_FOR_DEBT:
                # paying a debt (pages it holds are claimed): the room comes back as the debt
                # is paid at the start of each pass, or when the claim lapses
                return wait(out)
            if action == policy.ASK_AND_WAIT:
                manager.ask_for_room()
                return wait(out)
        denied = denied or manager.refusals != before
        manager.note_held_back(denied and policy.held_back(
            denied, cache.kv.owed_blocks(), manager.others_hold_room()))
        return out

    return wrapped


def wrap_create_batch_processor(original):
    """ContinuousBatchingManager._create_batch_processor, hooking each processor built on a
    kvpager cache (see the module docstring)."""
    @functools.wraps(original)
    def _create_batch_processor(self):
        processor = original(self)
        cache = getattr(processor, "cache", None)
        if isinstance(cache, cache_class()):
            cache.make_capacity_elastic()
            scheduler = getattr(processor, "scheduler", None)
            if scheduler is not None and "schedule_batch" not in vars(scheduler):
                offloader = getattr(processor, "offloading_manager", None)
                scheduler.schedule_batch = _wait_on_refusal(scheduler.schedule_batch, scheduler,
                                                            cache, offloader)
                scheduler.clear_cancelled_requests = _pay_on_every_pass(
                    scheduler.clear_cancelled_requests, scheduler, cache, offloader)
            stream = getattr(getattr(processor, "inputs_and_outputs", None), "compute_stream", None)
            if stream is not None:
                cache.kv.set_unmap_stream(int(stream.cuda_stream))
        return processor

    return _create_batch_processor
