"""Component ids, each typed once: the app shell, the pattern-matching export ids, and one
namespace per page (tests import them too, without importing the page modules)."""

INTERVAL = "tick-interval"
NAV_PAIR = "nav-pair"
SOURCE_BADGE = "source-badge"
AGE_BADGE = "age-badge"
LEG_BADGES = "leg-badges"
STATUS_BANNER = "status-banner"
TOASTS = "alert-toasts"
ALERT_SEEN = "alert-seen"  # per tab: the newest alert id already shown
NEW_ALERTS = "new-alerts"  # the alerts just toasted, for desktop notifications
NOTIFY = "notify-switch"  # opt-in to browser notifications, remembered by the browser
NOTIFY_DONE = "notify-done"
NAV_TOGGLER = "nav-toggler"  # the navbar's menu button below 992 px
NAV_COLLAPSE = "nav-collapse"  # what it opens: the page links, the pair, the legs, "Notify me"
TICK = "tick-payload"  # what one tick changed, for the open page's clientside callback
CURSOR = "page-cursor"  # pattern type: what the open page holds (per chart: what it shows, its last final bar)
PAGE_LOCATION = "_pages_location"  # dash.page_container's location

NAV_LINK = "nav-link"  # pattern type of the navbar's page links
VIEW = "view"  # pattern type of a page's view controls (range, correlation window): the tick reads them
ZOOM = "zoom"  # pattern type of a chart's zoomed x window ([x0, x1] or None), kept from its relayoutData

EXPORT_BUTTON = "export-png"
EXPORT_DONE = "export-png-done"


def view(name: str) -> dict:
    return {"type": VIEW, "name": name}


def nav_link(path: str) -> dict:
    """A page's link in the navbar (its href keeps the URL's ?pair=)."""
    return {"type": NAV_LINK, "path": path}


def cursor(path: str) -> dict:
    """The store of what a page has applied; written in the browser, read by the tick."""
    return {"type": CURSOR, "page": path}


def zoom(graph_id: str) -> dict:
    return {"type": ZOOM, "graph": graph_id}


def export_button(graph_id: str) -> dict:
    return {"type": EXPORT_BUTTON, "graph": graph_id}


def export_done(graph_id: str) -> dict:
    return {"type": EXPORT_DONE, "graph": graph_id}


RANGE = view("range")


class Overview:
    ROWS = "overview-rows"
    COUNT = "overview-count"
    SORT = view("sort")


class Live:
    PRICE_GRAPH = "live-price-graph"
    TICKS = "live-ticks"
    CARD_TITLE = ("live-a-title", "live-b-title")
    CARD_PRICE = ("live-a-price", "live-b-price")
    CARD_SUB = ("live-a-sub", "live-b-sub")


class Analytics:
    HEDGE = "an-hedge"
    TIMEFRAME = "an-tf"
    LOG = "an-log"
    PARAMS_MSG = "an-params-msg"
    BETA_GRAPH = "an-beta-graph"
    STAT_BETA = "an-beta"
    STAT_BETA_SUB = "an-beta-sub"
    CORR_WINDOW = view("corr")
    STATS_PANEL = "an-stats"
    WINDOW = "an-window"
    WINDOW_APPLY = "an-window-apply"
    SPREAD_GRAPH = "an-spread-graph"
    Z_GRAPH = "an-z-graph"
    STAT_Z = "an-z"
    STAT_Z_SUB = "an-z-sub"
    STAT_SPREAD = "an-spread"
    STAT_MEAN = "an-mean"
    STAT_STD = "an-std"
    STAT_ALERTS = "an-alerts"


class Settings:
    HEDGE = "set-hedge"
    TIMEFRAME = "set-tf"
    LOG = "set-log"
    SYMBOL_A = "set-symbol-a"
    SYMBOL_B = "set-symbol-b"
    THRESHOLD = "set-threshold"
    WINDOW = "set-window"
    POLL = "set-poll"
    SAVE = "set-save"
    SAVE_MSG = "set-save-msg"
    ALERT_LOG = "set-alert-log"
    CLEAR_ALERTS = "set-clear-alerts"
    CLEAR_MSG = "set-clear-msg"
    RULES = "set-rules"
    RULE_KIND = "set-rule-kind"
    RULE_LEVEL = "set-rule-level"
    RULE_LEG = "set-rule-leg"
    RULE_HYST = "set-rule-hysteresis"
    RULE_COOLDOWN = "set-rule-cooldown"
    RULE_ADD = "set-rule-add"
    RULE_MSG = "set-rule-msg"
    RULE_DELETE = "set-rule-delete"  # pattern type; index = the rule's position
    WEBHOOK = "set-webhook"
    WEBHOOK_SAVE = "set-webhook-save"
    WEBHOOK_MSG = "set-webhook-msg"
    WEBHOOK_STATUS = "set-webhook-status"
    TEST_ALERT = "set-test-alert"
    TEST_MSG = "set-test-msg"
    HOST_INFO = "set-host-info"
    HOST_BUTTON = "set-host"  # pattern type; url = the REST host it switches to
    HOST_MSG = "set-host-msg"
    WATCHLIST = "set-watchlist"
    PAIR_ADD_A = "set-pair-add-a"
    PAIR_ADD_B = "set-pair-add-b"
    PAIR_ADD = "set-pair-add"
    PAIR_MSG = "set-pair-msg"
    PAIR_REMOVE = "set-pair-remove"  # pattern type; pair = "A-B"


class Backtest:
    ENTRY = "bt-entry"
    EXIT = "bt-exit"
    STOP = "bt-stop"
    COST = "bt-cost"
    MSG = "bt-msg"
    METRICS = ("bt-total", "bt-sharpe", "bt-dd", "bt-hit", "bt-count")  # the metric cards, in order
    EQUITY_GRAPH = "bt-equity-graph"
    TRADES = "bt-trades"
    CSV_LINK = "bt-csv"
    TIMER = "bt-timer"


class Scanner:
    MODE = "scan-mode"  # "top" (by 24 h quote volume) or "list" (typed symbols)
    QUOTE = "scan-quote"
    TOP = "scan-top"
    SYMBOLS = "scan-symbols"
    TIMEFRAME = "scan-tf"
    LOOKBACK = "scan-lookback"
    BUDGET = "scan-budget"
    SCAN = "scan-run"
    CANCEL = "scan-cancel"
    PROGRESS_ROW = "scan-progress-row"
    PROGRESS = "scan-progress"
    MSG = "scan-msg"
    SUMMARY = "scan-summary"
    SKIPPED = "scan-skipped"
    RESULTS = "scan-results"
    ADD_MSG = "scan-add-msg"
