"""Mean-reversion backtest of the spread's z-score. Pure: arrays in, equity and trades out.

Rules, evaluated at each bar's close:
- flat, z crosses above +entry → short the spread; z crosses below −entry → long the spread;
- long: exit when z rises to `exit_level` or above, stop when z ≤ −stop; short: mirror image;
- every decision made at bar t is filled at the next bar with both prices (no look-ahead), with
  the hedge ratio known at t: long spread = +1 unit of A and −β units of B;
- costs: `cost_bps` basis points of each leg's notional, per fill.
Returns are per unit of gross notional at entry (|A| + |β·B|); the equity curve starts at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.settings import SettingsError, parse_float, shown


def _crossed_up(prev, now, level):
    return not math.isnan(prev) and prev < level <= now


def _crossed_down(prev, now, level):
    return not math.isnan(prev) and prev > level >= now


def backtest(
    times,
    a,
    b,
    beta,
    z,
    entry: float,
    exit_level: float = 0.0,
    stop: float | None = None,
    cost_bps: float = 0.0,
    bars_per_year: float = 365 * 24 * 3600,
) -> dict:
    a, b, beta, z = (np.asarray(v, float) for v in (a, b, beta, z))
    n = len(z)
    equity = np.ones(n)
    trades = []
    pos, qa, qb, notional, value = 0, 0.0, 0.0, 1.0, 0.0
    pending = None  # (side, or 0 to close; reason; β at the signal; z at the signal)
    open_trade = None
    cum = 0.0  # cumulative return
    prev_z = math.nan
    for t in range(n):
        ok = not (math.isnan(a[t]) or math.isnan(b[t]))
        if pos and ok:  # mark to market
            now_value = qa * a[t] + qb * b[t]
            cum += (now_value - value) / notional
            value = now_value
        if pending and ok:  # fill at this bar's prices
            side, reason, hedge, signal_z = pending
            if pos:  # close
                cost = cost_bps / 1e4 * (abs(qa * a[t]) + abs(qb * b[t])) / notional
                cum -= cost
                open_trade.update(
                    exit_time=times[t],
                    exit_reason=reason,
                    ret=float(cum - open_trade["start_cum"]),
                    bars=t - open_trade["entry_bar"],
                )
                trades.append(open_trade)
                pos, qa, qb, open_trade = 0, 0.0, 0.0, None
            if side:  # open
                pos, qa, qb = side, float(side), -side * hedge
                notional = abs(a[t]) + abs(hedge * b[t])
                value = qa * a[t] + qb * b[t]
                open_trade = {
                    "entry_time": times[t],
                    "side": "long spread" if side > 0 else "short spread",
                    "entry_z": float(signal_z),
                    "beta": float(hedge),
                    "entry_bar": t,
                    "start_cum": cum,
                }
                cum -= cost_bps / 1e4  # both legs' notionals add up to the gross notional
            pending = None
        equity[t] = 1.0 + cum
        zt = z[t]
        if not math.isnan(zt) and pending is None and not math.isnan(beta[t]):
            if pos == 0:
                if _crossed_up(prev_z, zt, entry):
                    pending = (-1, "entry", beta[t], zt)
                elif _crossed_down(prev_z, zt, -entry):
                    pending = (1, "entry", beta[t], zt)
            elif pos > 0:
                if stop is not None and zt <= -stop:
                    pending = (0, "stop", beta[t], zt)
                elif zt >= exit_level:
                    pending = (0, "exit", beta[t], zt)
            elif pos < 0:
                if stop is not None and zt >= stop:
                    pending = (0, "stop", beta[t], zt)
                elif zt <= exit_level:
                    pending = (0, "exit", beta[t], zt)
        if not math.isnan(zt):
            prev_z = zt
    if open_trade:
        open_trade.update(
            exit_time=None,
            exit_reason="open",
            ret=float(cum - open_trade["start_cum"]),
            bars=n - 1 - open_trade["entry_bar"],
        )
        trades.append(open_trade)
    for tr in trades:
        del tr["start_cum"], tr["entry_bar"]
    return {"equity": equity, "trades": trades, "metrics": metrics(equity, trades, bars_per_year)}


def metrics(equity: np.ndarray, trades: list[dict], bars_per_year: float) -> dict:
    rets = np.diff(equity)
    sd = rets.std(ddof=1) if len(rets) > 1 else math.nan
    closed = [t for t in trades if t["exit_reason"] != "open"]
    peak = np.maximum.accumulate(equity)
    return {
        "total_return": float(equity[-1] - 1.0) if len(equity) else 0.0,
        "sharpe": float(rets.mean() / sd * math.sqrt(bars_per_year)) if sd and sd > 0 else math.nan,
        "max_drawdown": float(np.max(1.0 - equity / peak)) if len(equity) else 0.0,
        "hit_rate": float(sum(t["ret"] > 0 for t in closed) / len(closed)) if closed else math.nan,
        "trades": len(trades),
    }


@dataclass(frozen=True)
class BacktestParams:
    entry: float = 2.0
    exit_level: float = 0.0
    stop: float | None = 4.0
    cost_bps: float = 5.0


def parse_params(entry, exit_level, stop, cost_bps) -> BacktestParams:
    """Validated backtest parameters; SettingsError with a message for a person otherwise."""
    e = parse_float(entry, "Entry |z|")
    x = parse_float(exit_level, "Exit z")
    s = None if stop is None or (isinstance(stop, str) and not stop.strip()) else parse_float(stop, "Stop |z|")
    c = parse_float(cost_bps, "Cost (bp per leg)")
    if e <= 0:
        raise SettingsError(f"Entry |z| must be greater than 0, got {shown(entry)}")
    if abs(x) >= e:
        raise SettingsError(f"Exit z must lie inside ±entry ({e:g}), got {shown(exit_level)}")
    if s is not None and s <= e:
        raise SettingsError(f"Stop |z| must be beyond the entry ({e:g}), got {shown(stop)}")
    if not 0 <= c <= 1_000:
        raise SettingsError(f"Cost must be from 0 to 1000 bp per leg, got {shown(cost_bps)}")
    return BacktestParams(e, x, s, c)
