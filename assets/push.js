// Prices pushed as they trade: on /live, an EventSource on /api/push?page=/live sets the cards'
// values (dash_clientside.set_props) as soon as the server's store has a new trade, between the
// page's ticks. The server answers 204 when it has nothing to push (a source that is not a
// stream), and the EventSource then stays closed. Each pushed value carries its tick time
// (`stamps`): the page's tick (tick.js) leaves a card alone when it already shows a newer one.
(function () {
    const PATH = '/live';
    let source = null;
    let url = null;
    const stamps = {};  // "id.prop" -> ISO time of the tick the value shows

    function wanted() {
        if (window.location.pathname.replace(/\/+$/, '') !== PATH) { return null; }
        const pair = new URLSearchParams(window.location.search).get('pair');
        return '/api/push?page=' + PATH + (pair ? '&pair=' + encodeURIComponent(pair) : '');
    }

    function show(event) {
        const update = JSON.parse(event.data);
        Object.keys(update.values).forEach(function (key) {
            const dot = key.lastIndexOf('.');
            const props = {};
            props[key.slice(dot + 1)] = update.values[key];
            window.dash_clientside.set_props(key.slice(0, dot), props);
            stamps[key] = update.stamps[key];
        });
    }

    function follow() {  // open, move or close the EventSource as the page and pair change
        const next = wanted();
        if (next === url) { return; }
        if (source) { source.close(); source = null; }
        Object.keys(stamps).forEach(function (k) { delete stamps[k]; });
        url = next;
        if (url && window.EventSource) {
            source = new EventSource(url);
            source.onmessage = show;
        }
    }

    window.pairmonitorPush = {
        // True when the value the tick brings for `key` (shown at `stamp`) is older than the one
        // already pushed: the tick leaves it.
        newer: function (key, stamp) { return Boolean(stamps[key] && stamp && stamps[key] > stamp); }
    };
    window.setInterval(follow, 250);
})();
