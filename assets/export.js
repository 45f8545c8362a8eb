// Browser-side PNG export: Plotly's own image export of the chart as drawn, no server work.
// The file name carries the chart, the pair (from layout.meta.export_name) and the UTC time.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
    exporter: {
        png: function (nClicks) {
            const noUpdate = window.dash_clientside.no_update;
            const trigger = window.dash_clientside.callback_context.triggered_id;
            if (!nClicks || !trigger) { return noUpdate; }
            const host = document.getElementById(trigger.graph);
            const gd = host && host.querySelector('.js-plotly-plot');
            if (!gd || !window.Plotly) { return noUpdate; }
            const meta = (gd.layout && gd.layout.meta) || {};
            const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
            const name = (meta.export_name || trigger.graph) + '_' + stamp;
            window.Plotly.downloadImage(gd, {format: 'png', filename: name,
                width: gd._fullLayout.width, height: gd._fullLayout.height, scale: 2});
            return name + '.png';
        }
    }
});
