"""Incremental pair analytics: bars, hedge ratio, spread and rolling z, kept up to date per tick.

A `PairEngine` holds the analytics of one parameter set (`Params`) for every FINAL bar since
its anchor, plus the recursive hedge state (expanding OLS sums, Kalman filter) at the last
final bar. A bar is final once it closed more than the allowed lateness ago (the watermark):
a tick that lands late, but inside that window, only changes bars that are still provisional.
Provisional bars (the closed ones inside the window and the open one) are computed on the side
at each read from the last final state, and never committed. So a tick costs
O(new bars · window), whatever the history, and in steady state nothing is recomputed.

Every value at bar t uses data up to t only. Only a write older than the watermark (a
backfilled hole) makes the engine start over from its anchor; `resets` counts those restarts
and `on_restart` reports them (the `pairmonitor_analysis_recomputes_total` metric).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services import analytics, hedge
from services.bars import TIMEFRAMES, bar_open, to_bars
from services.store import PriceStore

COLUMNS = ("a", "b", "beta", "alpha", "spread", "mean", "std", "zscore")


@dataclass(frozen=True)
class Params:
    pair: tuple[str, str]
    tf: str = "1s"
    hedge: str = "none"
    window: int = 60
    log: bool = False

    @property
    def tf_s(self) -> int:
        return TIMEFRAMES[self.tf]


class PairEngine:
    def __init__(
        self, params: Params, store: PriceStore, ffill_s: int, span_s: int, on_restart=None, anchor_s: int | None = None
    ):
        """`anchor_s`: the first bar computed (None: the whole span). Exact from `anchor_s` plus
        `warmup_bars` on, for the windowed methods only (a recursive one needs the whole span)."""
        self.p = params
        self.store = store
        self.ffill_s = ffill_s
        self.span_s = span_s
        self.anchor_s = anchor_s
        self.capacity = span_s // params.tf_s + 2
        self.lock = threading.Lock()
        self.resets = 0  # restarts from the anchor after a write older than the watermark
        self._on_restart = on_restart
        self._clear()

    def _clear(self) -> None:
        # Final bars live in buffers twice the capacity: rows [lo, hi) are valid; new bars are
        # written in place, and the buffer is compacted only when its end is reached.
        self._times = np.empty(2 * self.capacity, dtype=np.int64)
        self._cols = {c: np.empty(2 * self.capacity) for c in COLUMNS}
        self._lo = self._hi = 0
        self._provisional_memo = None
        self.state = None
        self.end: int | None = None  # open time of the last final (committed) bar
        self.seq = self.store.write_seq

    def _restart(self) -> None:
        self._clear()
        self.resets += 1
        if self._on_restart is not None:
            self._on_restart(self.p)

    # --- computing bars --------------------------------------------------------------------
    def _inputs(self, first: int, last: int):
        """Bar open times and the two legs' bar prices for bars first..last (open times)."""
        a_sym, b_sym = self.p.pair
        tf = self.p.tf_s
        if tf == 1:
            a = self.store.filled(a_sym, first, last, self.ffill_s)
            b = self.store.filled(b_sym, first, last, self.ffill_s)
            return np.arange(first, last + 1, dtype=np.int64), a, b
        times, a = to_bars(first, self.store.prices(a_sym, first, last + tf - 1), tf)
        _, b = to_bars(first, self.store.prices(b_sym, first, last + tf - 1), tf)
        return times, a, b

    def _transform(self, x):
        if not self.p.log:
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def _compute(self, first: int, last: int):
        """Analytics of bars first..last, continuing the committed bars; returns (times, cols, state)."""
        times, a, b = self._inputs(first, last)
        ctx = min(self._hi - self._lo, self.p.window)
        last = {c: self._cols[c][self._hi - ctx : self._hi] for c in ("a", "b", "spread")}  # the final bars before
        ya = self._transform(np.concatenate([last["a"], a]))
        xb = self._transform(np.concatenate([last["b"], b]))
        state = self.state
        if self.p.hedge in hedge.RECURSIVE:
            beta, alpha, state = hedge.hedge(self.p.hedge, xb[ctx:], ya[ctx:], self.p.window, state)
        else:
            beta, alpha, _ = hedge.hedge(self.p.hedge, xb, ya, self.p.window, start=ctx)
            beta, alpha = beta[ctx:], alpha[ctx:]
        spread = analytics.spread(ya[ctx:], xb[ctx:], beta, alpha)
        past = last["spread"]
        mean, std, z = analytics.rolling_zscore(np.concatenate([past, spread]), self.p.window)
        cols = {
            "a": a,
            "b": b,
            "beta": beta,
            "alpha": alpha,
            "spread": spread,
            "mean": mean[ctx:],
            "std": std[ctx:],
            "zscore": z[ctx:],
        }
        return times, cols, state

    @property
    def times(self) -> np.ndarray:
        """Open times of the final bars (a view: read it under the lock)."""
        return self._times[self._lo : self._hi]

    @property
    def cols(self) -> dict[str, np.ndarray]:
        return {c: v[self._lo : self._hi] for c, v in self._cols.items()}

    def _commit(self, times, cols, state) -> None:
        """Append bars, keeping the newest `capacity`: O(new bars), amortised."""
        k = min(len(times), self.capacity)
        times, cols = times[-k:], {c: cols[c][-k:] for c in COLUMNS}
        if self._hi + k > len(self._times):  # compact: the rows still kept go to the front
            keep = min(self._hi - self._lo, self.capacity - k)
            for buf in (self._times, *self._cols.values()):
                buf[:keep] = buf[self._hi - keep : self._hi]
            self._lo, self._hi = 0, keep
        self._times[self._hi : self._hi + k] = times
        for c in COLUMNS:
            self._cols[c][self._hi : self._hi + k] = cols[c]
        self._hi += k
        self._lo = max(self._lo, self._hi - self.capacity)
        self.state = state
        self.end = int(times[-1])

    def first_bar(self, now_s: int) -> int:
        """The open time of the first bar this engine computes (at its start or restart)."""
        first = bar_open(now_s - self.span_s + 1, self.p.tf_s)
        return first if self.anchor_s is None else max(first, bar_open(self.anchor_s, self.p.tf_s))

    def final_until(self, now_s: int, lateness_s: float) -> int:
        """Open time of the last bar that is final at `now_s`: it closed at least `lateness_s` ago."""
        tf = self.p.tf_s
        return bar_open(int(now_s - lateness_s), tf) - tf

    def update(self, now_s: int, lateness_s: float = 0) -> None:
        """Commit every bar final by `now_s` (closed at least `lateness_s` seconds ago)."""
        tf = self.p.tf_s
        last_final = self.final_until(now_s, lateness_s)
        with self.lock:
            earliest = self.store.earliest_write_since(self.seq)
            if self.end is not None and earliest is not None and earliest < self.end + tf:
                self._restart()  # the past of a final bar changed: only a full recompute is exact
            self.seq = self.store.write_seq
            first = self.first_bar(now_s) if self.end is None else self.end + tf
            if first <= last_final:
                self._commit(*self._compute(first, last_final))

    # --- reading ---------------------------------------------------------------------------
    def frame(self, start_s: int, end_s: int, now_s: int, lateness_s: float = 0) -> pd.DataFrame:
        """Bars whose open time is in [start_s, end_s]: the final ones, then the provisional ones
        (closed inside the lateness window, and the open bar) as they stand now."""
        return self._frame(*self.arrays(start_s, end_s, now_s, lateness_s))

    def arrays(self, start_s: int, end_s: int, now_s: int, lateness_s: float = 0):
        """`frame`'s bars as (open times, {column: values}), without building a DataFrame."""
        self.update(now_s, lateness_s)
        tf = self.p.tf_s
        with self.lock:
            lo, hi = np.searchsorted(self.times, [start_s, end_s + 1])
            times = self.times[lo:hi]
            cols = {c: v[lo:hi] for c, v in self.cols.items()}
            last = min(bar_open(now_s, tf), bar_open(end_s, tf))
            if self.end is not None and last > self.end and last >= start_s:
                t2, c2 = self._provisional(bar_open(now_s, tf))
                keep = (t2 >= start_s) & (t2 <= last)
                times = np.concatenate([times, t2[keep]])
                cols = {c: np.concatenate([cols[c], c2[c][keep]]) for c in COLUMNS}
        return times, cols

    def _provisional(self, open_bar: int):
        """The bars after the last final one, up to the open bar, as they stand: computed once per
        store write and second, however many readers (cards, every chart) ask. Values never depend
        on later bars, so each reader slices what it needs."""
        key = (self.end, open_bar, self.store.write_seq, self.resets)
        if self._provisional_memo is None or self._provisional_memo[0] != key:
            times, cols, _ = self._compute(self.end + self.p.tf_s, open_bar)
            self._provisional_memo = (key, times, cols)
        return self._provisional_memo[1:]

    def final_after(self, after_s: int | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Open times and columns ("a", "b", "beta", ...) of the final bars with open time >
        after_s (all of them for None): copies, for readers that need no DataFrame."""
        with self.lock:
            lo = 0 if after_s is None else int(np.searchsorted(self.times, after_s, side="right"))
            return self.times[lo:].copy(), {c: v[lo:].copy() for c, v in self.cols.items()}

    def committed_after(self, after_s: int | None) -> pd.DataFrame:
        """Final bars with open time > after_s (all of them for None)."""
        return self._frame(*self.final_after(after_s))

    def _frame(self, times, cols) -> pd.DataFrame:
        a_sym, b_sym = self.p.pair
        seconds = np.asarray(times, dtype=np.int64).astype("datetime64[s]").astype("datetime64[ns]")
        index = pd.DatetimeIndex(seconds).tz_localize("UTC")  # as pd.to_datetime(unit="s", utc=True), 3x faster
        index.name = "timestamp_utc"
        data = {a_sym: cols["a"], b_sym: cols["b"], **{c: cols[c] for c in COLUMNS[2:]}}
        return pd.DataFrame(data, index=index)
