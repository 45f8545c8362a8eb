// One round trip per tab per tick: the server's tick callback sends one payload (ids.TICK) with
// everything the tick changed; each page's clientside callback applies it here, without another
// request. A chart gets either a whole figure, or a tail: the bars from the first one that was
// still provisional, which replace what the chart holds from that time on (so a value drawn
// before its late tick landed is corrected), then the chart is trimmed to its range.
(function () {
    function lowerBound(xs, x) {  // first index whose x is >= x (x are ISO UTC strings: they sort as text)
        let lo = 0, hi = xs.length;
        while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (xs[mid] < x) { lo = mid + 1; } else { hi = mid; }
        }
        return lo;
    }

    function spliceTrace(trace, columns, x, keepFrom) {
        const out = Object.assign({}, trace);
        const xs = Array.from(trace.x || []);
        const cut = lowerBound(xs, x[0]);
        const merged = xs.slice(0, cut).concat(x);
        const lo = lowerBound(merged, keepFrom);
        out.x = merged.slice(lo);
        Object.keys(columns).forEach(function (key) {
            out[key] = Array.from(trace[key] || []).slice(0, cut).concat(columns[key]).slice(lo);
        });
        return out;
    }

    function applyChart(update, figure) {
        if (update.figure) { return update.figure; }
        if (!figure || !figure.data) { return window.dash_clientside.no_update; }
        const data = figure.data.slice();
        update.traces.forEach(function (columns, i) {
            data[i] = spliceTrace(data[i], columns, update.x, update.keep_from);
        });
        return Object.assign({}, figure, {data: data});
    }

    function rowsOf(columns) {  // {field: [values]} (numpy arrays server-side) -> [{field: value}]
        const fields = Object.keys(columns);
        const n = fields.length ? columns[fields[0]].length : 0;
        const rows = new Array(n);
        for (let i = 0; i < n; i++) {
            const row = {};
            fields.forEach(function (f) { row[f] = columns[f][i]; });
            rows[i] = row;
        }
        return rows;
    }

    // A value as its output takes it: a table's columns become its rows; {render, data} is drawn
    // by window.pairmonitorRender[render] (components made in the browser from plain data).
    function plain(key, value) {
        if (value && value.render) { return window.pairmonitorRender[value.render](value.data); }
        return key.endsWith('.rowData') && value && value.columns ? rowsOf(value.columns) : value;
    }

    window.pairmonitorTick = {
        // A chart's zoomed x window from its relayoutData: [x0, x1] after a zoom or pan, null after
        // a reset (autorange); other layout events (a y zoom, autosize) keep what it was.
        zoom: function (relayout) {
            const noUpdate = window.dash_clientside.no_update;
            if (!relayout) { return noUpdate; }
            if (relayout['xaxis.autorange']) { return null; }
            const range = relayout['xaxis.range'] || [];
            const x0 = relayout['xaxis.range[0]'] !== undefined ? relayout['xaxis.range[0]'] : range[0];
            const x1 = relayout['xaxis.range[1]'] !== undefined ? relayout['xaxis.range[1]'] : range[1];
            if (x0 === undefined || x1 === undefined) { return noUpdate; }
            return [String(x0), String(x1)];
        },
        // spec: {path, outputs: ["id.prop", ...]}; figures: the page's charts' current figures,
        // in the order their ".figure" outputs come in spec.outputs. Returns the outputs, then the
        // page's cursor: what it now holds (a chart whose tail found nothing to extend is left out,
        // so the next tick sends it whole).
        apply: function (spec, tick, figures) {
            const noUpdate = window.dash_clientside.no_update;
            if (!tick || tick.path !== spec.path) {
                return spec.outputs.map(function () { return noUpdate; }).concat([noUpdate]);
            }
            const cursor = Object.assign({}, tick.cursor);
            let chart = 0;
            const values = spec.outputs.map(function (key) {
                const isFigure = key.endsWith('.figure');
                const figure = isFigure ? figures[chart++] : null;
                if (!(key in tick.values)) { return noUpdate; }
                const stamps = tick.values.stamps;  // a value the push (push.js) showed newer stays
                if (stamps && window.pairmonitorPush && window.pairmonitorPush.newer(key, stamps[key])) {
                    return noUpdate;
                }
                const value = tick.values[key];
                if (!isFigure) { return plain(key, value); }
                const applied = applyChart(value, figure);
                if (applied === noUpdate) { delete cursor[key.slice(0, -'.figure'.length)]; }
                return applied;
            });
            return values.concat([cursor]);
        }
    };
})();
