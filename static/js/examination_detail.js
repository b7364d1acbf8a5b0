// Polls the examination's status while analysis is pending, then reloads once.
(function () {
  const panel = document.getElementById("analysis");
  if (!panel) return;
  const pending = ["pending", "running"];
  if (!pending.includes(panel.dataset.status)) return;
  const url = panel.dataset.statusUrl;
  let delay = 1000;
  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (body.done) { window.location.reload(); return; }
      }
    } catch (e) { /* network blip: try again */ }
    delay = Math.min(delay * 1.5, 10000);
    setTimeout(poll, delay);
  }
  setTimeout(poll, delay);
})();
