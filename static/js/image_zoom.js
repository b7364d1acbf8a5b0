// Zoom and pan for examination images: every element with data-zoom (the examination page's
// viewer: the photograph and its explanation overlays, which move together).
//   keyboard (the viewer takes focus): + or = zooms in, - zooms out, arrow keys move, 0 resets;
//   mouse: the wheel zooms once the image has been clicked (focused), drag moves, double-click
//   zooms in (or resets when zoomed);
//   touch: pinch zooms, one finger moves a zoomed image;
//   buttons under the image do the same, and a status line says the zoom level.
// No library: CSS transforms on the images, set from script (the CSP allows no inline script
// or style attribute in the page, but a script may set element styles).
(function () {
  "use strict";
  var MIN = 1;
  var MAX = 8;
  var STEP = 1.25; // one key press or wheel notch
  var PAN = 40; // px per arrow key press

  function setup(viewer, index) {
    var images = Array.prototype.filter.call(viewer.children, function (el) { return el.tagName === "IMG"; });
    if (!images.length) return;
    var scale = 1;
    var x = 0;
    var y = 0;

    if (!viewer.hasAttribute("tabindex")) viewer.tabIndex = 0;
    if (!viewer.hasAttribute("aria-label")) {
      viewer.setAttribute("aria-label", "Examination image: + and - zoom, arrow keys move, 0 resets");
    }
    var statusId = (viewer.id || "zoom-" + index) + "-status";
    viewer.setAttribute("aria-describedby", statusId);
    viewer.classList.add("zoomable");
    images.forEach(function (img) {
      img.draggable = false;
      img.classList.add("zoom-layer");
    });

    var bar = document.createElement("div");
    bar.className = "zoom-controls";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Zoom");
    function button(text, label, action) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "secondary small";
      b.textContent = text;
      b.setAttribute("aria-label", label);
      b.addEventListener("click", action);
      bar.appendChild(b);
      return b;
    }
    var out = button("\u2212", "Zoom out", function () { zoomAt(1 / STEP); });
    button("+", "Zoom in", function () { zoomAt(STEP); });
    var reset = button("Reset", "Reset zoom", function () { set(1, 0, 0); });
    var status = document.createElement("span");
    status.className = "zoom-status muted";
    status.id = statusId;
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    bar.appendChild(status);
    viewer.insertAdjacentElement("afterend", bar);

    function set(s, nx, ny) {
      var w = viewer.clientWidth;
      var h = viewer.clientHeight;
      scale = Math.min(MAX, Math.max(MIN, s));
      // The image always covers the frame: no empty band at an edge.
      x = Math.min(0, Math.max(w * (1 - scale), nx));
      y = Math.min(0, Math.max(h * (1 - scale), ny));
      var transform = scale === 1 ? "" : "translate(" + x + "px, " + y + "px) scale(" + scale + ")";
      images.forEach(function (img) { img.style.transform = transform; });
      viewer.classList.toggle("zoomed", scale > 1);
      viewer.setAttribute("data-zoom", String(Math.round(scale * 100) / 100));
      out.disabled = scale <= MIN;
      reset.disabled = scale <= MIN;
      status.textContent = "Zoom " + Math.round(scale * 100) + " %";
    }

    // Zoom by `factor` keeping the point (cx, cy) of the frame where it is (the centre by default).
    function zoomAt(factor, cx, cy) {
      if (cx === undefined) { cx = viewer.clientWidth / 2; cy = viewer.clientHeight / 2; }
      var s = Math.min(MAX, Math.max(MIN, scale * factor));
      var k = s / scale;
      set(s, cx - (cx - x) * k, cy - (cy - y) * k);
    }

    function local(event) {
      var box = viewer.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    }

    viewer.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      var handled = true;
      switch (e.key) {
        case "+": case "=": zoomAt(STEP); break;
        case "-": case "_": zoomAt(1 / STEP); break;
        case "0": set(1, 0, 0); break;
        case "ArrowLeft": handled = scale > 1; if (handled) set(scale, x + PAN, y); break;
        case "ArrowRight": handled = scale > 1; if (handled) set(scale, x - PAN, y); break;
        case "ArrowUp": handled = scale > 1; if (handled) set(scale, x, y + PAN); break;
        case "ArrowDown": handled = scale > 1; if (handled) set(scale, x, y - PAN); break;
        default: handled = false;
      }
      if (handled) e.preventDefault(); // not zoomed: the arrows scroll the page as usual
    });

    viewer.addEventListener("wheel", function (e) {
      if (document.activeElement !== viewer && !e.ctrlKey) return; // scrolling past the image
      e.preventDefault();
      var p = local(e);
      zoomAt(e.deltaY < 0 ? STEP : 1 / STEP, p[0], p[1]);
    }, { passive: false });

    viewer.addEventListener("dblclick", function (e) {
      var p = local(e);
      if (scale > 1) set(1, 0, 0); else zoomAt(2, p[0], p[1]);
    });

    // Pointers: one drags a zoomed image, two pinch.
    var pointers = {};
    var pinch = null;
    function count() { return Object.keys(pointers).length; }
    function spread() {
      var ps = Object.keys(pointers).map(function (k) { return pointers[k]; });
      return {
        d: Math.hypot(ps[0][0] - ps[1][0], ps[0][1] - ps[1][1]),
        c: [(ps[0][0] + ps[1][0]) / 2, (ps[0][1] + ps[1][1]) / 2],
      };
    }
    viewer.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      viewer.setPointerCapture(e.pointerId);
      pointers[e.pointerId] = local(e);
      if (count() === 2) pinch = spread();
    });
    viewer.addEventListener("pointermove", function (e) {
      if (!(e.pointerId in pointers)) return;
      var before = pointers[e.pointerId];
      var now = local(e);
      pointers[e.pointerId] = now;
      if (count() === 2 && pinch) {
        var next = spread();
        if (pinch.d > 0) zoomAt(next.d / pinch.d, next.c[0], next.c[1]);
        set(scale, x + next.c[0] - pinch.c[0], y + next.c[1] - pinch.c[1]);
        pinch = next;
      } else if (count() === 1 && scale > 1) {
        viewer.classList.add("dragging");
        set(scale, x + now[0] - before[0], y + now[1] - before[1]);
      }
    });
    function release(e) {
      delete pointers[e.pointerId];
      if (count() < 2) pinch = null;
      if (!count()) viewer.classList.remove("dragging");
    }
    viewer.addEventListener("pointerup", release);
    viewer.addEventListener("pointercancel", release);
    window.addEventListener("resize", function () { set(scale, x, y); });

    set(1, 0, 0);
  }

  document.querySelectorAll("[data-zoom]").forEach(setup);
})();
