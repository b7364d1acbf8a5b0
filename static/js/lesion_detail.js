// Lesion page: while examinations are waiting for analysis, poll their status and reload
// once they are all finished, so the timeline, chart and change show the new results.
(function () {
  "use strict";
  var pending = Array.prototype.slice.call(document.querySelectorAll("[data-status-url]"));
  if (!pending.length) return;
  var delay = 2000;
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
      if (done.every(Boolean)) { window.location.reload(); return; }
      delay = Math.min(delay * 1.5, 15000);
      window.setTimeout(poll, delay);
    });
  }
  window.setTimeout(poll, delay);
})();
