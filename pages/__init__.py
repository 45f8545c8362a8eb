"""Dash pages: one module per page (register_page, layout, that page's callbacks)."""
