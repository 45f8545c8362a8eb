// Opt-in desktop notifications for alerts (the Notification API): asked for when the navbar
// switch is turned on; each new alert this tab toasts is also shown as a notification then.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
    notifier: {
        ask: function (on) {
            if (!on || !('Notification' in window)) { return 'off'; }
            if (Notification.permission === 'default') { Notification.requestPermission(); }
            return Notification.permission;
        },
        show: function (alerts, on) {
            if (!on || !alerts || !('Notification' in window) || Notification.permission !== 'granted') {
                return window.dash_clientside.no_update;
            }
            alerts.forEach(function (a) { new Notification(a.title, {body: a.body, tag: a.tag}); });
            return alerts.length;
        }
    }
});
