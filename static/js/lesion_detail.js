// Lesion page: while examinations are waiting for analysis, poll their status and reload as
// soon as one of them finishes, so each result shows as it lands (timeline, chart, change).
// Quick polls while the worker is likely busy with it (a prediction takes about a second),
// then slower ones so a stuck queue does not cost the server a request every half second.
(function () {
  "use strict";
  var pending = Array.prototype.slice.call(document.querySelectorAll("[data-status-url]"));
  if (!pending.length) return;
  var started = Date.now();
  function nextDelay() {
    var waited = Date.now() - started;
    if (waited < 20000) return 500;
    if (waited < 60000) return 2000;
    return 10000;
  }
  function poll() {
    Promise.all(
      pending.map(function (el) {
        return fetch(el.getAttribute("data-status-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (body) {
            if (!body) return false;
            el.textContent = { pending: "Waiting for analysis", running: "Being analysed", done: "Analysed", failed: "Analysis failed" }[body.status] || body.status;
            el.className = "status status-" + body.status;
            return body.done;
          })
          .catch(function () { return false; });
      })
    ).then(function (done) {
      if (done.some(Boolean)) { window.location.reload(); return; }
      window.setTimeout(poll, nextDelay());
    });
  }
  window.setTimeout(poll, 500);
})();
