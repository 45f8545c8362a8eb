"""The floor a page's cost is measured against: a minimal Dash page, one 1 s interval, one callback.

python bench/minimal_app.py PORT
"""

import sys
import time

import dash
from dash import Input, Output, dcc, html

app = dash.Dash(__name__)
app.layout = html.Div([dcc.Interval(id="tick", interval=1_000), html.Div(id="now")])


@app.callback(Output("now", "children"), Input("tick", "n_intervals"))
def now(_n):
    return time.strftime("%H:%M:%S")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), debug=False)
