"""What a browser tab sends to Dash, without a browser: its one tick callback request per tick,
with the state a real tab carries from one tick to the next (alerts seen, the cursor)."""

from components import ids

TICK_OUTPUTS = [
    (ids.NAV_PAIR, "children"),
    (ids.SOURCE_BADGE, "children"),
    (ids.SOURCE_BADGE, "color"),
    (ids.AGE_BADGE, "children"),
    (ids.AGE_BADGE, "color"),
    (ids.LEG_BADGES, "children"),
    (ids.STATUS_BANNER, "children"),
    (ids.INTERVAL, "interval"),
    (ids.TOASTS, "children"),
    (ids.ALERT_SEEN, "data"),
    (ids.NEW_ALERTS, "data"),
    (ids.TICK, "data"),
]
PAGE_VIEWS = {"/": {"sort": "watchlist"}, "/live": {"range": "15m"}, "/analytics": {"range": "15m", "corr": 60}}


def tick_payload(n_intervals: int, path: str = "/", seen=None, cursor=None, view=None, zooms=None, search="") -> dict:
    """The body of POST /_dash-update-component for the tick callback on `path` with the URL's
    query `search` (e.g. "?pair=SOLUSDT-ETHUSDT"; `zooms`: the zoomed x window of each chart,
    {graph id: [x0, x1]})."""
    view = PAGE_VIEWS.get(path, {}) if view is None else view
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in TICK_OUTPUTS) + "..",
        "outputs": [{"id": i, "property": p} for i, p in TICK_OUTPUTS],
        "inputs": [
            {"id": ids.INTERVAL, "property": "n_intervals", "value": n_intervals},
            {"id": ids.PAGE_LOCATION, "property": "pathname", "value": path},
            {"id": ids.PAGE_LOCATION, "property": "search", "value": search},
            [{"id": ids.view(name), "property": "value", "value": v} for name, v in view.items()],
            [{"id": ids.zoom(g), "property": "data", "value": z} for g, z in (zooms or {}).items()],
        ],
        "changedPropIds": [f"{ids.INTERVAL}.n_intervals"],
        "state": [
            {"id": ids.ALERT_SEEN, "property": "data", "value": seen},
            [{"id": ids.cursor(path), "property": "data", "value": cursor}],
        ],
    }


class Tab:
    """A tab on one page: each `tick()` posts what the browser would and keeps what it would."""

    def __init__(self, post, path: str = "/", search: str = ""):
        self.post, self.path, self.search = post, path, search  # post(json_body) -> (status, JSON or None)
        self.n, self.seen, self.cursor = 0, None, None
        self.zooms: dict = {}  # graph id -> [x0, x1], as the browser keeps them from relayoutData

    def tick(self) -> dict:
        self.n += 1
        status, body = self.post(
            tick_payload(self.n, self.path, self.seen, self.cursor, zooms=self.zooms, search=self.search)
        )
        if status != 200:
            raise RuntimeError(f"tick callback HTTP {status}")
        response = body["response"]
        self.seen = response.get(ids.ALERT_SEEN, {}).get("data", self.seen)
        self.cursor = response[ids.TICK]["data"]["cursor"]  # as the page's clientside callback keeps it
        return response
