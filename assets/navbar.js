// The navbar's menu below the lg breakpoint (992 px): its toggler opens and closes it; going to another
// page closes it.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  navbar: {
    toggle: function (_clicks, _path, open) {
      const ctx = window.dash_clientside.callback_context;
      return ctx.triggered_id === "nav-toggler" ? !open : false;
    },
  },
});
