"""Shared work is done once: concurrent misses wait for the one computation."""

import threading
import time

import pytest

from services.singleflight import SingleFlight


def test_concurrent_misses_compute_once_and_all_get_the_value():
    memo = SingleFlight()
    calls, started = [], threading.Event()

    def slow():
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return {"figure": 42}

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("k", slow))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and memo.computed == 1
    assert len(results) == 16 and all(r is results[0] for r in results), "every tab gets the one result"
    assert memo.get("k", slow) is results[0] and len(calls) == 1, "then served from the memo"


def test_a_failure_reaches_every_waiter_and_is_not_memoised():
    memo = SingleFlight()
    gate = threading.Event()

    def failing():
        gate.wait(1)
        raise ValueError("database is locked")

    errors = []

    def caller():
        try:
            memo.get("k", failing)
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert errors == ["database is locked"] * 4
    assert memo.get("k", lambda: "recovered") == "recovered", "the next call computes again"


def test_bounded_by_count_and_age():
    now = [0.0]
    memo = SingleFlight(max_entries=3, ttl_s=10, clock=lambda: now[0])
    for k in range(5):
        memo.get(k, lambda k=k: k)
    assert memo.get(0, lambda: "again") == "again", "the oldest entries were pushed out"
    assert memo.get(4, lambda: "again") == 4
    now[0] = 11
    assert memo.get(4, lambda: "fresh") == "fresh", "expired"


def test_different_keys_do_not_wait_for_each_other():
    memo = SingleFlight()
    release = threading.Event()
    t = threading.Thread(target=lambda: memo.get("slow", lambda: release.wait(2)))
    t.start()
    start = time.perf_counter()
    assert memo.get("fast", lambda: 1) == 1
    assert time.perf_counter() - start < 0.5
    release.set()
    t.join()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_even_a_base_exception_frees_the_key(exc):
    memo = SingleFlight()

    def boom():
        raise exc

    with pytest.raises(exc):
        memo.get("k", boom)
    assert memo.get("k", lambda: 7) == 7
