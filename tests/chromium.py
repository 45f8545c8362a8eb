"""Headless Chromium on a machine with no internet: no background calls to Google's hosts (the
browser tests and the benchmarks that open real tabs use these)."""

OFFLINE_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
