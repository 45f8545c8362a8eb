"""Pure UI builders: data in, Dash components or plotly figures out."""
