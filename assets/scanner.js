// The scanner's "Add to watchlist" cell (dash-ag-grid custom cell renderer): a click sets the
// grid's cellRendererData to the row's pair, which pages/scanner.py adds to the watchlist.
(function () {
    var renderers = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});
    renderers.AddToWatchlist = function (props) {
        return React.createElement('button', {
            className: 'btn btn-sm btn-outline-success py-0 scan-add',
            title: 'Watch ' + props.data.a + ' against ' + props.data.b,
            onClick: function () { props.setData(props.data.pair); },
        }, 'Add to watchlist');
    };
})();
