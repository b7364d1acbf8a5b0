// Overlay toggles and opacity for the explanations; polls while analysis or explanations are pending.
(function () {
  const panel = document.getElementById("analysis");
  if (!panel) return;

  const layers = { cam: document.getElementById("layer-cam"), lime: document.getElementById("layer-lime") };
  const opacity = document.getElementById("opacity");
  function show(kind) {
    for (const [name, el] of Object.entries(layers)) {
      if (el) el.hidden = name !== kind;
    }
  }
  document.querySelectorAll('input[name="layer"]').forEach(function (radio) {
    radio.addEventListener("change", function () { show(radio.value); });
  });
  if (opacity) {
    opacity.addEventListener("input", function () {
      for (const el of Object.values(layers)) if (el) el.style.opacity = String(opacity.value / 100);
    });
  }

  const waiting = ["pending", "running"].includes(panel.dataset.status) || panel.dataset.explanationsPending === "true";
  if (!waiting) return;
  const url = panel.dataset.statusUrl;
  // Quick polls while a result is likely close (prediction ~1 s, heatmaps ~2 s after upload),
  // then slower ones so a stuck queue does not cost a request every half second.
  const started = Date.now();
  const nextDelay = () => {
    const waited = Date.now() - started;
    return waited < 20000 ? 500 : waited < 60000 ? 2000 : 10000;
  };
  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const body = await response.json();
        if (body.explanations_done || (body.done && panel.dataset.status !== "done" && body.status !== "done")) {
          window.location.reload();
          return;
        }
        if (body.done && ["pending", "running"].includes(panel.dataset.status)) {
          window.location.reload();  // prediction arrived; explanations follow
          return;
        }
      }
    } catch (e) { /* network blip: try again */ }
    setTimeout(poll, nextDelay());
  }
  setTimeout(poll, 500);
})();
