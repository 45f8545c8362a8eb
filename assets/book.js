// The overview's rows, drawn from plain data (components/book.py `row_view`): a dcc.Link per pair
// with one labelled cell per column. The server sends strings; the components are made here.
(function () {
    function el(type, props, namespace) {
        return {type: type, namespace: namespace || 'dash_html_components', props: props};
    }

    function value(c) {
        if (c.pair) {
            return [el('Strong', {children: c.pair}), el('Small', {children: ' ' + c.sub, className: 'text-muted'})];
        }
        if (c.z) {
            return el('Div', {className: 'd-flex align-items-center', children: [
                el('Div', {className: 'zbar', title: c.z.title, children: [
                    el('Div', {className: 'zbar-fill bg-' + c.z.color, style: c.z.fill}),
                    el('Div', {className: 'zbar-theta', style: {left: '25%'}}),
                    el('Div', {className: 'zbar-theta', style: {left: '75%'}}),
                    el('Div', {className: 'zbar-zero'}),
                ]}),
                el('Span', {className: 'zbar-value text-' + c.z.color, children: c.z.text}),
            ]});
        }
        if (c.badge) { return el('Span', {className: 'badge bg-' + c.color, children: c.badge}); }
        if (c.spark !== undefined) { return c.spark ? el('Img', {src: c.spark, alt: c.alt}) : '–'; }
        return c.text;
    }

    function cell(c) {
        return el('Div', {className: ('book-cell ' + (c.cls || '')).trim(), children: [
            el('Span', {className: 'book-label', children: c.label}),
            el('Span', {className: 'book-value', children: value(c)}),
        ]});
    }

    window.pairmonitorRender = Object.assign({}, window.pairmonitorRender, {
        book: function (rows) {
            return rows.map(function (r) {
                return el('Link', {href: r.href, className: 'book-row', title: r.title, children: r.cells.map(cell)},
                    'dash_core_components');
            });
        },
    });
})();
