// The navbar's menu below the lg breakpoint (992 px): its toggler opens and closes it; going to another
// page closes it. Its links keep the pair the URL names (?pair=A-B), and mark the page shown.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  navbar: {
    toggle: function (_clicks, _path, open) {
      const ctx = window.dash_clientside.callback_context;
      return ctx.triggered_id === "nav-toggler" ? !open : false;
    },
    links: function (path, search) {
      const pair = new URLSearchParams(search || "").get("pair");
      const query = pair ? "?pair=" + encodeURIComponent(pair) : "";
      const outputs = window.dash_clientside.callback_context.outputs_list;
      return [
        outputs[0].map(function (o) { return o.id.path + query; }),
        outputs[1].map(function (o) { return o.id.path === path; }),
      ];
    },
  },
});
