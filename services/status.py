"""What the navbar, the pages and `/api/health` say about the data: typed, built in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UpstreamError:
    """The last thing that kept fresh prices from coming in: the exchange, or the app itself."""

    message: str
    status: int | None
    code: int | None
    time_utc: str


@dataclass(frozen=True)
class LegStatus:
    symbol: str
    state: str  # live | stale | disconnected | waiting
    age_s: float | None
    reason: str | None
    last_tick_utc: str | None


@dataclass(frozen=True)
class MarketStatus:
    state: str  # starting | ok | stale | error
    source: str
    source_label: str
    simulated: bool
    source_note: str
    symbols: tuple[str, ...]
    legs: tuple[LegStatus, ...]
    last_tick_utc: str | None  # the pair's oldest leg
    age_s: float | None
    stale_after_s: float
    last_error: UpstreamError | None
    rate_limited_until_utc: str | None
    rate_limit_resumes_in_s: float | None
    upstream_polls: int
    worker_pid: int
    settings_error: str | None
    rest_host_note: str
    webhook: dict | None
    database_error: str | None = None  # the database file failed while running: live data from memory only
    stream: dict | None = None  # --source stream: the connection's state (TradeStream.state)
    database: dict | None = None  # the engine, where it is, whether it answers, and the rows waiting for it
    shared_cache: dict | None = None  # the file cache, or Redis and whether it answers (services.cache)

    @property
    def unhealthy(self) -> bool:
        return self.state in ("stale", "error") or self.database_error is not None

    def leg(self, symbol: str) -> LegStatus:
        return next(leg for leg in self.legs if leg.symbol == symbol)

    def as_dict(self) -> dict:
        """The JSON of `/api/health` (legs by symbol, `status` for the state)."""
        body = asdict(self)
        body["status"] = body.pop("state")
        body["symbols"] = list(self.symbols)
        body["legs"] = {leg.symbol: {k: v for k, v in asdict(leg).items() if k != "symbol"} for leg in self.legs}
        body["ages_s"] = {leg.symbol: leg.age_s for leg in self.legs}
        return body
