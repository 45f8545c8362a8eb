"""Everything that is not UI. No module in this package imports dash."""
