"""A KvCache open while the process forks (vLLM's and multiprocessing's workers): the child
can close it and exit without hanging, cannot allocate from the parent's cache, and the parent
is unaffected (issue 20, item 2)."""

import os
import signal
import time

import pytest

from conftest import small_cache

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def wait_child(pid, timeout_s=20.0):
    """The child's exit status; SIGKILLs it and fails the test if it hangs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} hung")


def child(body):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


@pytest.mark.parametrize("how", ["close", "exit", "views"])
def test_a_forked_child_exits_cleanly_and_cannot_use_the_parents_cache(how, shm_prefix):
    import kvpager

    kv = small_cache("interleaved", instance="forked-parent")
    held = kv.alloc(4)
    view = kv.tensor(0, 0)

    def body():
        try:
            kv.alloc(1)
            return 3  # must not allocate from the parent's cache
        except kvpager.StateError as e:
            if "forked" not in str(e):
                return 4
        if not kv.forked:
            return 5
        if how == "close":
            kv.close()
        elif how == "views":
            del globals_holder[:]  # drop what the child holds; no destructor may run
        return 0

    globals_holder = [view]
    for _ in range(5):  # several times: the hang was a race with the background threads
        pid = child(body)
        assert wait_child(pid) == 0
    # the parent's cache is untouched by its children
    more = kv.alloc(2)
    kv.free(held + more)
    assert kv.stats()["blocks_in_use"] == 0
    assert not kv.forked
    kv.close()
