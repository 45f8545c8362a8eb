"""Bucket alignment: last price per UTC second, out-of-order and duplicate ticks, gaps, bounds."""

from datetime import UTC, datetime, timedelta

import numpy as np

from services.sources import Tick, utc_from_epoch
from services.store import FILLED_KEPT_MAX_S, BucketRing, PriceStore

T0 = datetime(2025, 10, 22, 0, 0, 0, tzinfo=UTC)
S0 = int(T0.timestamp())


def tick(sym, price, seconds):
    return Tick(sym, price, T0 + timedelta(seconds=seconds))


def test_last_price_in_the_second_wins():
    store = PriceStore(span_s=60)
    store.add_ticks([tick("A", 1.0, 0.1), tick("A", 2.0, 0.9), tick("A", 3.0, 1.0)])
    np.testing.assert_array_equal(store.prices("A", S0, S0 + 1), [2.0, 3.0])


def test_out_of_order_tick_does_not_overwrite_a_later_one():
    store = PriceStore(span_s=60)
    store.add_ticks([tick("A", 2.0, 0.9), tick("A", 1.0, 0.1)])
    np.testing.assert_array_equal(store.prices("A", S0, S0), [2.0])
    store.add_ticks([tick("A", 5.0, 5.5), tick("A", 4.0, 4.5)])  # late tick for an earlier second
    np.testing.assert_array_equal(store.prices("A", S0 + 4, S0 + 5), [4.0, 5.0])


def test_duplicates_change_nothing():
    store = PriceStore(span_s=60)
    t = tick("A", 7.0, 3.25)
    store.add_ticks([t, t, t])
    np.testing.assert_array_equal(store.prices("A", S0 + 3, S0 + 3), [7.0])


def test_gaps_read_as_nan_and_buckets_do_not_shift():
    store = PriceStore(span_s=60)
    store.add_ticks([tick("A", 1.0, 0.5), tick("A", 9.0, 10.2)])
    out = store.prices("A", S0, S0 + 10)
    assert out[0] == 1.0 and out[10] == 9.0
    assert np.isnan(out[1:10]).all()


def test_ring_is_bounded_and_forgets_the_oldest():
    ring = BucketRing(capacity=100)
    for s in range(250):
        ring.put(S0 + s + 0.5, float(s))
    assert ring.price.size == 100
    window = ring.window(S0, S0 + 249)
    assert np.isnan(window[:150]).all()
    np.testing.assert_array_equal(window[150:], np.arange(150, 250, dtype=float))
    assert not ring.put(S0 + 10.5, -1.0), "a tick older than the span is dropped"


def test_store_memory_is_fixed_by_span():
    store = PriceStore(span_s=86_400)
    store.add_ticks([tick("A", 1.0, s) for s in range(0, 200_000, 7)])
    store.add_ticks([tick("B", 1.0, 0)])
    assert store.nbytes() == 2 * 86_400 * 24


def test_raw_tick_log_and_retain():
    store = PriceStore(span_s=60, raw_ticks=3)
    store.add_ticks([tick("A", float(i), i) for i in range(5)])
    store.add_ticks([tick("B", 10.0, 2.5)])
    store.add_ticks([tick("B", 11.0, 1.5)], raw=False)
    recent = store.recent_ticks(["A", "B"], 4)
    assert [(t.symbol, t.price) for t in recent] == [("A", 4.0), ("A", 3.0), ("B", 10.0), ("A", 2.0)]
    assert all(t.time.tzinfo is not None and t.time.utcoffset() == timedelta(0) for t in recent)
    store.retain(["B"])
    assert store.latest_second("A") is None and store.last_tick("B").price == 10.0


def test_a_later_tick_at_the_same_price_changes_nothing_readers_see():
    store = PriceStore(span_s=60)
    s = 1_700_000_000
    assert store.add_ticks([Tick("X", 1.0, utc_from_epoch(s + 0.1))]) == 1
    seq = store.write_seq
    assert store.add_ticks([Tick("X", 1.0, utc_from_epoch(s + 0.9))]) == 0 and store.write_seq == seq
    assert store.add_ticks([Tick("X", 2.0, utc_from_epoch(s + 0.5))]) == 0, "older than the bucket's newest tick"
    assert store.add_ticks([Tick("X", 2.0, utc_from_epoch(s + 0.95))]) == 1 and store.write_seq == seq + 1
    assert store.prices("X", s, s)[0] == 2.0


def test_a_filled_read_is_computed_once_per_write_for_all_its_readers():
    store = PriceStore(span_s=60)
    store.add_ticks([tick("A", 1.0, 0.5), tick("A", 2.0, 3.5)])  # seconds 0 and 3; 1, 2 and 4.. empty
    first = store.filled("A", S0 + 1, S0 + 6, 2)
    np.testing.assert_array_equal(first, [1.0, 1.0, 2.0, 2.0, 2.0, np.nan])  # filled for 2 s at most
    assert store.filled("A", S0 + 1, S0 + 6, 2) is first, "the same read of the same write: computed once"
    assert not first.flags.writeable, "shared by its readers: none may change it"
    np.testing.assert_array_equal(store.filled("B", S0, S0 + 1, 2), [np.nan, np.nan])  # a symbol not held
    store.add_ticks([tick("A", 5.0, 5.5)])
    np.testing.assert_array_equal(store.filled("A", S0 + 1, S0 + 6, 2), [1.0, 1.0, 2.0, 2.0, 5.0, 5.0])
    whole = store.filled("A", S0 - FILLED_KEPT_MAX_S, S0 + 6, 2)  # a whole history (a start): not kept
    assert store.filled("A", S0 - FILLED_KEPT_MAX_S, S0 + 6, 2) is not whole
    np.testing.assert_array_equal(whole[-6:], [1.0, 1.0, 2.0, 2.0, 5.0, 5.0])
