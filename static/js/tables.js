// Tables on a phone: below 600 px each row is stacked as a card and every cell shows its
// column's heading before it (base.css, td[data-label]::before). Templates may write the
// data-label themselves (the patient page, the follow-ups); this fills it in for any other
// table of class "table" from its <thead>, so no table loses its headings on a small screen.
(function () {
  "use strict";
  document.querySelectorAll("table.table").forEach(function (table) {
    var headings = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return th.textContent.trim();
    });
    if (!headings.length) return;
    table.querySelectorAll("tbody tr").forEach(function (row) {
      var column = 0;
      Array.prototype.forEach.call(row.cells, function (cell) {
        if (!cell.hasAttribute("data-label") && cell.colSpan === 1 && headings[column]) {
          cell.setAttribute("data-label", headings[column]);
        }
        column += cell.colSpan;
      });
    });
  });
})();
