"""Timeframes: 1-second buckets into 1m / 5m / 15m bars, in UTC, labelled by open time.

A bar holds the bars' seconds [open, open + tf); it is labelled by its open time, as Binance labels
klines, and bar boundaries are UTC multiples of the timeframe. Close = the last price of the bar
(what the spread uses); OHLC for candles. A bar with no price at all is NaN: a gap, never filled.
"""

from __future__ import annotations

import numpy as np

TIMEFRAMES = {"1s": 1, "1m": 60, "5m": 300, "15m": 900}


def bar_open(second: int, tf_s: int) -> int:
    return int(second) // tf_s * tf_s


def to_bars(start_s: int, prices: np.ndarray, tf_s: int, ohlc: bool = False):
    """Bars of `tf_s` seconds from per-second `prices` starting at UTC second `start_s`.

    Returns (open_times, close) or, with `ohlc`, (open_times, open, high, low, close). The first
    and last bars may be partial (they hold only the seconds given).
    """
    prices = np.asarray(prices, float)
    if tf_s == 1:
        times = np.arange(start_s, start_s + len(prices), dtype=np.int64)
        return (times, prices, prices, prices, prices) if ohlc else (times, prices)
    seconds = np.arange(start_s, start_s + len(prices), dtype=np.int64)
    group = (seconds // tf_s) - (start_s // tf_s)
    n = int(group[-1]) + 1 if len(group) else 0
    times = (np.arange(n, dtype=np.int64) + start_s // tf_s) * tf_s
    ok = ~np.isnan(prices)
    close = np.full(n, np.nan)
    close[group[ok]] = prices[ok]  # later seconds overwrite earlier ones: the last price wins
    if not ohlc:
        return times, close
    first = np.full(n, np.nan)
    first[group[ok][::-1]] = prices[ok][::-1]  # earliest wins
    high, low = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(high, group[ok], prices[ok])
    np.minimum.at(low, group[ok], prices[ok])
    empty = np.isnan(close)
    return times, first, np.where(empty, np.nan, high), np.where(empty, np.nan, low), close
