"""What a browser tab sends to Dash, without a browser: callback requests for the app shell."""
from components import ids

SHELL_OUTPUTS = [(ids.NAV_PAIR, "children"), (ids.SOURCE_BADGE, "children"), (ids.SOURCE_BADGE, "color"),
                 (ids.AGE_BADGE, "children"), (ids.AGE_BADGE, "color"), (ids.LEG_BADGES, "children"),
                 (ids.STATUS_BANNER, "children"), (ids.INTERVAL, "interval")]
TOAST_OUTPUTS = [(ids.TOASTS, "children"), (ids.ALERT_SEEN, "data"), (ids.NEW_ALERTS, "data")]


def callback_payload(outputs, n_intervals: int, state=()) -> dict:
    """The body of POST /_dash-update-component for a callback fired by the tick interval."""
    return {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
            "outputs": [{"id": i, "property": p} for i, p in outputs],
            "inputs": [{"id": ids.INTERVAL, "property": "n_intervals", "value": n_intervals}],
            "changedPropIds": [f"{ids.INTERVAL}.n_intervals"],
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state]}


def shell_payload(n_intervals: int = 1) -> dict:
    return callback_payload(SHELL_OUTPUTS, n_intervals)


def toast_payload(n_intervals: int, seen) -> dict:
    return callback_payload(TOAST_OUTPUTS, n_intervals, [(ids.ALERT_SEEN, "data", seen)])
