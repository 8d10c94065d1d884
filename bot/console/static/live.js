// The live handoff queue: fetch the queue every few seconds (same origin, the session cookie) and
// tick each waiting time every second, without reloading the page. No inline script: CSP script-src 'self'.
(function () {
  "use strict";
  var box = document.getElementById("live-queue");
  if (!box) { return; }
  var status = document.getElementById("live-status");
  var every = Math.max(2, parseInt(box.getAttribute("data-every"), 10) || 5) * 1000;
  var skew = 0; // server clock minus this browser's clock, in seconds

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function waited(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) { return h + " 小时 " + pad(m) + " 分"; }
    return m + " 分 " + pad(s) + " 秒";
  }

  function learnSkew() {
    var cell = box.querySelector(".waited[data-now]");
    if (cell) { skew = parseFloat(cell.getAttribute("data-now")) - Date.now() / 1000; }
  }

  function tick() {
    var now = Date.now() / 1000 + skew;
    var cells = box.querySelectorAll(".waited[data-since]");
    for (var i = 0; i < cells.length; i++) {
      cells[i].textContent = waited(now - parseFloat(cells[i].getAttribute("data-since")));
    }
  }

  function say(text) { if (status) { status.textContent = text; } }

  function refresh() {
    fetch(box.getAttribute("data-src"), {credentials: "same-origin", cache: "no-store",
                                         headers: {"Accept": "application/json"}})
      .then(function (resp) {
        if (resp.status === 401) { throw new Error("login"); }
        if (!resp.ok) { throw new Error("http " + resp.status); }
        return resp.json();
      })
      .then(function (q) {
        box.innerHTML = q.html;
        skew = q.now - Date.now() / 1000;
        tick();
        say("每 " + every / 1000 + " 秒自动刷新");
        setTimeout(refresh, every);
      })
      .catch(function (err) {
        if (err && err.message === "login") { say("登录已失效，请刷新页面重新登录"); return; }
        say("刷新失败，稍后重试");
        setTimeout(refresh, every * 2);
      });
  }

  learnSkew();
  tick();
  setInterval(tick, 1000);
  setTimeout(refresh, every);
})();
