"""The cointegration scanner: which pairs among the exchange's symbols are worth watching.

A scan takes a universe (the top N TRADING symbols of a quote asset by 24 h quote volume, or a
list), fetches each symbol's closed klines of one timeframe over a lookback, within a
request-weight budget per minute (and not at all inside the exchange's Retry-After window), and
tests every pair of symbols on their log prices over the bars both have:

- Engle–Granger (statsmodels `coint`) in both directions, keeping the better: the row's `a` is the
  regressand of that direction, so adding the row to the watchlist keeps it;
- Johansen's trace statistic for "no cointegrating vector", and its verdict at 5 %;
- the OLS β of a on b, the AR(1) half-life of a − β·b, and the correlation of their returns.

Rows are ranked by the Engle–Granger p-value, then the half-life. A result is cached (in the
cache every process shares) per source, universe, timeframe and lookback until the timeframe's
next bar closes; at most one scan runs at a time on a data dir (`ScanSlot`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from statsmodels.tsa.stattools import coint
from statsmodels.tsa.vector_ar.vecm import coint_johansen
from threadpoolctl import threadpool_limits

from services.binance import BinanceError, BinanceRateLimited
from services.settings import SettingsError, parse_symbol, shown
from services.sources import INTERVALS, iso_utc
from services.stats import half_life

log = logging.getLogger(__name__)
TIMEFRAMES = {name: seconds for seconds, name in INTERVALS.items()}  # "1m" -> 60, ...
DEFAULT_QUOTE = "USDT"
DEFAULT_TOP = 20
MAX_SYMBOLS = 100
DEFAULT_TF = "1m"  # 500 of them fit in the simulation's day; pick 1h on the exchange for longer views
DEFAULT_LOOKBACK = 500
MIN_LOOKBACK = 50
MAX_LOOKBACK = 5_000  # five kline requests a symbol
WEIGHT_BUDGET_PER_MIN = 1_000  # of Binance's 6,000 a minute per IP: the live polls keep the rest
EXCHANGE_WEIGHT_LIMIT = 6_000
EXCHANGE_WEIGHT_SAFE = 0.8  # above this share of the exchange's limit (its header says), wait for the next minute
QUOTE_RE = re.compile(r"^[A-Z0-9]{2,10}$")
COLUMNS = (
    "pair",
    "a",
    "b",
    "eg_pvalue",
    "johansen_trace",
    "johansen_5pct",
    "beta",
    "half_life_bars",
    "return_corr",
    "bars",
)
SLOT_KEY = "scan:running"
SLOT_MAX_S = 900  # a scan that holds the slot longer has died without saying so
SLOT_WAIT_S = 120  # a scan waits this long for another to end, then says so


class ScanError(ValueError):
    """A scan that cannot be asked for or run; the message says why, for the user. `status` is
    the HTTP status it answers with: 400 for what was asked, 503 for what the exchange did."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScanRequest:
    quote: str = DEFAULT_QUOTE
    top: int = DEFAULT_TOP
    symbols: tuple[str, ...] = ()  # a typed universe; empty: the top `top` of `quote` by volume
    tf: str = DEFAULT_TF
    lookback: int = DEFAULT_LOOKBACK

    @property
    def interval_s(self) -> int:
        return TIMEFRAMES[self.tf]

    @property
    def label(self) -> str:
        return f"{self.universe}, {self.tf} × {self.lookback} bars"

    @property
    def universe(self) -> str:
        if self.symbols:
            return ",".join(self.symbols)
        return f"top {self.top} {self.quote} by 24 h quote volume"

    def key(self, source_key: str) -> str:
        return f"scan:{source_key}:{self.universe}:{self.tf}:{self.lookback}"

    def min_overlap(self) -> int:
        """Pairs with fewer bars in common are skipped."""
        return max(MIN_LOOKBACK, self.lookback // 2)


def _whole(raw, name: str, lo: int, hi: int) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ScanError(f"{name} must be a whole number, got {shown(raw)}") from None
    if not lo <= value <= hi:
        raise ScanError(f"{name} must be from {lo} to {hi}, got {shown(raw)}")
    return value


def parse_request(args: Mapping, known: set[str] | None = None) -> ScanRequest:
    """A scan request from query-string-like values (every one optional). `symbols` is a comma-
    or space-separated list (2 to MAX_SYMBOLS of them, each in `known` when given). Raises
    ScanError naming the bad value."""
    tf = str(args.get("tf", DEFAULT_TF)).strip()
    if tf not in TIMEFRAMES:
        raise ScanError(f"tf must be one of {', '.join(TIMEFRAMES)}, got {shown(tf)}")
    lookback = _whole(args.get("lookback", DEFAULT_LOOKBACK), "lookback", MIN_LOOKBACK, MAX_LOOKBACK)
    raw_symbols = args.get("symbols")
    if raw_symbols is not None and str(raw_symbols).strip():
        try:
            names = [parse_symbol(s, known, "symbols") for s in str(raw_symbols).replace(",", " ").split()]
        except SettingsError as exc:
            raise ScanError(str(exc)) from None
        symbols = tuple(dict.fromkeys(names))
        if not 2 <= len(symbols) <= MAX_SYMBOLS:
            raise ScanError(f"symbols must name 2 to {MAX_SYMBOLS} different symbols, got {len(symbols)}")
        return ScanRequest(symbols=symbols, tf=tf, lookback=lookback)
    quote = str(args.get("quote", DEFAULT_QUOTE)).strip().upper()
    if not QUOTE_RE.match(quote):
        raise ScanError(f"quote must be an asset name like USDT (2 to 10 letters or digits), got {shown(quote)}")
    top = _whole(args.get("top", DEFAULT_TOP), "top", 2, MAX_SYMBOLS)
    return ScanRequest(quote=quote, top=top, tf=tf, lookback=lookback)


# --- the statistics of one pair (pure) ---------------------------------------------------
def pair_stats(la: np.ndarray, lb: np.ndarray) -> dict:
    """The scanner's figures for two aligned log-price series, a regressed on b (the caller
    tries both directions through `eg_pvalue`)."""
    beta, _alpha = np.polyfit(lb, la, 1)
    johansen = coint_johansen(np.column_stack([la, lb]), det_order=0, k_ar_diff=1)
    trace, crit5 = float(johansen.lr1[0]), float(johansen.cvt[0, 1])
    return {
        "johansen_trace": trace,
        "johansen_5pct": bool(trace > crit5),
        "beta": float(beta),
        "half_life_bars": float(half_life(la - beta * lb)),
        "return_corr": float(np.corrcoef(np.diff(la), np.diff(lb))[0, 1]),
        "bars": len(la),
    }


def score_pair(a: str, b: str, la: np.ndarray, lb: np.ndarray) -> dict:
    """One row: Engle–Granger both ways (the better direction names `a`), then `pair_stats`."""
    p_ab = float(coint(la, lb)[1])
    p_ba = float(coint(lb, la)[1])
    if p_ba < p_ab:
        a, b, la, lb, p_ab = b, a, lb, la, p_ba
    return {"pair": f"{a}-{b}", "a": a, "b": b, "eg_pvalue": p_ab, **pair_stats(la, lb)}


def rank(rows: list[dict]) -> list[dict]:
    """By p-value, then half-life (a spread that never halves last)."""

    def order(r):
        hl = r["half_life_bars"]
        return (r["eg_pvalue"], hl if math.isfinite(hl) else math.inf)

    return sorted(rows, key=order)


# --- the request-weight budget -----------------------------------------------------------
class WeightBudget:
    """At most `per_minute` request weight in any 60 s, and a pause whenever the exchange says its
    whole limit is nearly used (X-MBX-USED-WEIGHT-1M, by everything on this IP)."""

    def __init__(self, per_minute: int, clock=time.monotonic, sleep=time.sleep):
        self.per_minute = per_minute
        self.clock = clock
        self.sleep = sleep
        self.spent = 0
        self._recent: deque[tuple[float, int]] = deque()

    def spend(self, weight: int, exchange_used: int | None, on_wait: Callable[[float], None]) -> None:
        while True:
            now = self.clock()
            while self._recent and now - self._recent[0][0] >= 60:
                self._recent.popleft()
            in_minute = sum(w for _, w in self._recent)
            limit = EXCHANGE_WEIGHT_LIMIT * EXCHANGE_WEIGHT_SAFE
            crowded = exchange_used is not None and exchange_used + weight > limit
            if in_minute + weight <= self.per_minute and not crowded:
                break
            wait = 60 - now % 60 if crowded else 60 - (now - self._recent[0][0])
            on_wait(wait)
            self.sleep(wait)
            exchange_used = None  # a new minute: the exchange's count has rolled over
        self._recent.append((self.clock(), weight))
        self.spent += weight


def planned_weight(source, req: ScanRequest, n_symbols: int) -> int:
    """What a scan will cost on the exchange (0 for a local source)."""
    weights = source.request_weight
    if not weights:
        return 0
    universe = 0 if req.symbols else weights["exchangeInfo"] + weights["ticker/24hr"]
    return universe + n_symbols * source.kline_pages(req.lookback) * weights["klines"]


# --- one scan ----------------------------------------------------------------------------
@dataclass
class ScanResult:
    request: ScanRequest
    source: str  # the source's label
    symbols: list[str]  # the universe, in the order scanned
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)  # "A-B: why", "SYM: why"
    computed_at: float = 0.0
    elapsed_s: float = 0.0
    weight: int = 0  # request weight spent
    last_bar_s: int | None = None  # open time of the newest bar scanned

    def as_json(self) -> dict:
        return {
            "universe": self.request.universe,
            "tf": self.request.tf,
            "lookback": self.request.lookback,
            "source": self.source,
            "symbols": self.symbols,
            "computed_at": iso_utc(self.computed_at),
            "elapsed_s": round(self.elapsed_s, 3),
            "weight": self.weight,
            "last_bar": None if self.last_bar_s is None else iso_utc(self.last_bar_s),
            "skipped": self.skipped,
            "rows": [{k: _finite(r[k]) for k in COLUMNS} for r in self.rows],
        }


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


Report = Callable[[int, int, str], None]  # (done, total, what is happening)


class Scanner:
    """Runs scans on one source; keeps their results in the shared `cache`; honours the poll
    gate's Retry-After window, and opens it on a 429/418."""

    def __init__(self, source, cache, gate, clock=time.time, budget: WeightBudget | None = None):
        self.source = source
        self.cache = cache
        self.gate = gate
        self.clock = clock
        self.budget = budget or WeightBudget(WEIGHT_BUDGET_PER_MIN)

    def key(self, req: ScanRequest) -> str:
        return req.key(self.source.store_key or self.source.label)  # a simulation's results are its own

    def cached(self, req: ScanRequest) -> ScanResult | None:
        return self.cache.get(self.key(req))

    def _last_key(self) -> str:
        return f"scan:last:{self.source.store_key or self.source.label}"

    def last(self) -> ScanResult | None:
        """The newest result on this source still fresh (what the page opens with)."""
        key = self.cache.get(self._last_key())
        return self.cache.get(key) if key else None

    def universe(self, req: ScanRequest) -> list[str]:
        if req.symbols:
            return list(req.symbols)
        volumes = self._call(self.source.markets, req.quote)
        ranked = sorted(volumes, key=lambda s: (-volumes[s], s))[: req.top]
        if len(ranked) < 2:
            label, n = self.source.label, len(ranked)
            raise ScanError(f"{label} has {n} TRADING symbol(s) quoted in {req.quote}; a scan needs 2")
        return ranked

    def _call(self, fn, *args):
        """One upstream call: not inside a Retry-After window; a 429/418 opens one for everybody."""
        until = self.gate.rate_limited_until(self.clock())
        if until:
            raise ScanError(f"Rate-limited by the exchange until {iso_utc(until)}; the scan stopped", 503)
        try:
            return fn(*args)
        except BinanceRateLimited as exc:
            self.gate.open_rate_limit_window(exc.status, exc.retry_after, self.clock())
            why = f"{exc.message}; the scan stopped, and no request is sent until the window ends"
            raise ScanError(why, 503) from None

    def run(self, req: ScanRequest, report: Report = lambda done, total, text: None) -> ScanResult:
        """Fetch, test every pair, rank, and cache the result. Raises ScanError."""
        started, spent_before = time.monotonic(), self.budget.spent
        weights = self.source.request_weight or {}
        report(0, 1, "Finding the universe")
        try:
            if weights and not req.symbols:
                self.budget.spend(weights["exchangeInfo"] + weights["ticker/24hr"], None, lambda s: None)
            symbols = self.universe(req)
            n_pairs = len(symbols) * (len(symbols) - 1) // 2
            total = len(symbols) + n_pairs
            closes, skipped = {}, []
            for i, sym in enumerate(symbols):
                if weights:
                    cost = self.source.kline_pages(req.lookback) * weights["klines"]
                    used = getattr(getattr(self.source, "client", None), "used_weight", None)
                    self.budget.spend(
                        cost, used, lambda s, i=i: report(i, total, f"Within the weight budget: waiting {s:.0f} s")
                    )
                report(i, total, f"Fetching {req.tf} klines of {sym} ({i + 1} of {len(symbols)})")
                try:
                    opens, prices = self._call(self.source.bar_closes, sym, req.interval_s, req.lookback)
                except BinanceError as exc:  # this symbol only (a rate limit is a ScanError: it stops the scan)
                    skipped.append(f"{sym}: {exc.message}")
                    continue
                closes[sym] = dict(zip(opens.tolist(), prices.tolist()))
        except BinanceError as exc:
            raise ScanError(f"The exchange did not answer the scan: {exc.message}", 503) from None
        n = len(symbols)
        rows = self._test_pairs(
            req, symbols, closes, skipped, lambda k: report(n + k, total, f"Testing pairs ({k} of {n_pairs})")
        )
        result = ScanResult(
            request=req,
            source=self.source.label,
            symbols=symbols,
            rows=rank(rows),
            skipped=skipped,
            computed_at=self.clock(),
            elapsed_s=time.monotonic() - started,
            weight=self.budget.spent - spent_before,
            last_bar_s=max((max(c) for c in closes.values() if c), default=None),
        )
        fresh_s = self._fresh_for_s(req)
        self.cache.set(self.key(req), result, timeout=fresh_s)
        self.cache.set(self._last_key(), self.key(req), timeout=fresh_s)
        report(total, total, "Done")
        return result

    def _test_pairs(self, req: ScanRequest, symbols, closes: dict, skipped: list, done: Callable[[int], None]) -> list:
        times = np.array(sorted({t for c in closes.values() for t in c}), np.int64)
        logs = {s: np.log(np.array([c.get(t, np.nan) for t in times.tolist()])) for s, c in closes.items()}
        rows, k = [], 0
        for i, a in enumerate(symbols):
            for b in symbols[i + 1 :]:
                k += 1
                if k % 10 == 0:
                    done(k)
                if a not in logs or b not in logs:
                    continue  # a symbol without klines, said once in `skipped`
                both = ~np.isnan(logs[a]) & ~np.isnan(logs[b])
                la, lb = logs[a][both], logs[b][both]
                if len(la) < req.min_overlap():
                    skipped.append(f"{a}-{b}: {len(la)} bars in common, fewer than {req.min_overlap()}")
                elif np.ptp(la) == 0 or np.ptp(lb) == 0:
                    skipped.append(f"{a}-{b}: a price that never moved")
                else:
                    try:
                        rows.append(score_pair(a, b, la, lb))
                    except (ValueError, np.linalg.LinAlgError) as exc:
                        skipped.append(f"{a}-{b}: the tests failed ({exc})")
        return rows

    def _fresh_for_s(self, req: ScanRequest) -> int:
        """Until the timeframe's next bar closes: then the data has changed."""
        step = req.interval_s
        return max(1, math.ceil(step - self.clock() % step))


# --- one scan at a time ------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ScanSlot:
    """At most one scan runs at a time on a data dir (each uses a core and request weight): the
    slot is a shared-cache key holding the scanning process; a slot whose process died (a
    cancelled scan is killed) is taken over."""

    def __init__(self, cache):
        self.cache = cache
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}

    def holder(self) -> dict | None:
        """{"key", "what", "pid", "host", "since"} of the scan running, or None."""
        held = self.cache.get(SLOT_KEY)
        if held and held.get("host") == self.me["host"] and not _alive(held["pid"]):
            self.cache.delete(SLOT_KEY)
            return None
        return held

    def take(self, key: str, what: str) -> bool:
        self.holder()  # clears a dead holder
        entry = {**self.me, "key": key, "what": what, "since": time.time()}
        return bool(self.cache.add(SLOT_KEY, entry, timeout=SLOT_MAX_S))

    def release(self) -> None:
        held = self.cache.get(SLOT_KEY)
        if held and held.get("pid") == self.me["pid"] and held.get("host") == self.me["host"]:
            self.cache.delete(SLOT_KEY)


# --- running a scan in a process of its own ---------------------------------------------
SCAN_NICE = 10  # a scan's process yields the CPU to the live pages


def in_the_background() -> None:
    """Call first in a scan's own process: a lower priority, and numpy's BLAS on one thread (it
    would otherwise spin a thread per core, so a scan took both cores of a 2-core machine)."""
    os.nice(SCAN_NICE)
    threadpool_limits(1)


PROGRESS_TTL_S = 90  # longer than any silence of a running scan (a budget wait is at most 60 s)
ERROR_TTL_S = 30


def busy_with_another(scanner: Scanner, req: ScanRequest) -> ScanError | None:
    """The error to give while a scan of something else holds the slot (asking again later is
    cheaper than a process waiting for it: a flood of requests must not become a pile of them)."""
    held = ScanSlot(scanner.cache).holder()
    if held is None or held.get("key") == scanner.key(req):
        return None
    return ScanError(f"Another scan ({held.get('what', '?')}) is running; try again when it ends", 503)


def run_job(scanner: Scanner, req: ScanRequest, report: Report) -> ScanResult:
    """A scan as a job runs it: in its own process (the live pages keep their cores), one at a time
    on a data dir. The same scan already running elsewhere is waited for (its result is used); a
    different one is a ScanError at once."""
    slot, key = ScanSlot(scanner.cache), scanner.key(req)
    give_up = time.monotonic() + SLOT_WAIT_S
    while not slot.take(key, req.label):
        done = scanner.cached(req)
        if done is not None:
            return done
        busy = busy_with_another(scanner, req)
        if busy is not None:
            raise busy
        if time.monotonic() > give_up:
            raise ScanError(f"The same scan ({req.label}) is still running elsewhere; try again when it ends", 503)
        report(0, 1, "The same scan is running for someone else: waiting for its result")
        time.sleep(0.5)
    try:
        return scanner.cached(req) or scanner.run(req, report)
    finally:
        slot.release()


class DetachedScans:
    """Scans the HTTP API starts: each in a forked process that leaves its progress, its result or
    its error in the shared cache, so that any worker can answer the next request for it."""

    def __init__(self, make_scanner: Callable[[], Scanner], cache):
        self.make_scanner = make_scanner  # called in the child: a connection of its own
        self.cache = cache

    def progress(self, key: str) -> dict | None:
        return self.cache.get(f"{key}:progress")

    def error(self, key: str) -> ScanError | None:
        found = self.cache.get(f"{key}:error")
        return ScanError(*found) if found else None

    def start(self, req: ScanRequest, key: str) -> None:
        """Start a scan of `req` unless one is running (its progress is fresh)."""
        if not self.cache.add(f"{key}:progress", {"done": 0, "total": 1, "text": "Starting"}, timeout=PROGRESS_TTL_S):
            return
        self.cache.delete(f"{key}:error")
        multiprocessing.active_children()  # reaps the scans that have ended (no zombies left behind)
        multiprocessing.get_context("fork").Process(target=self._child, args=(req, key), daemon=True).start()

    def _child(self, req: ScanRequest, key: str) -> None:
        def report(done: int, total: int, text: str) -> None:
            self.cache.set(f"{key}:progress", {"done": done, "total": total, "text": text}, timeout=PROGRESS_TTL_S)

        in_the_background()
        try:
            run_job(self.make_scanner(), req, report)
        except ScanError as exc:
            self.cache.set(f"{key}:error", (str(exc), exc.status), timeout=ERROR_TTL_S)
        except Exception as exc:  # a bug: said, not silently lost
            log.exception("scan failed")
            self.cache.set(f"{key}:error", (f"the scan failed: {exc.__class__.__name__}", 500), timeout=ERROR_TTL_S)
        finally:
            self.cache.delete(f"{key}:progress")
