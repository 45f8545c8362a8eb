"""Ids of components that live outside any one page (the app shell) or follow a pattern."""

INTERVAL = "tick-interval"
NAV_PAIR = "nav-pair"
SOURCE_BADGE = "source-badge"
AGE_BADGE = "age-badge"
STATUS_BANNER = "status-banner"

EXPORT_BUTTON = "export-png"
EXPORT_DONE = "export-png-done"


def export_button(graph_id: str) -> dict:
    return {"type": EXPORT_BUTTON, "graph": graph_id}


def export_done(graph_id: str) -> dict:
    return {"type": EXPORT_DONE, "graph": graph_id}
