// prh-bench leaderboard: click a column header of a table.sortable to sort by it.
// The tables are complete without this script; it only adds sorting.
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    if (raw === "" || raw === "—") return null;
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }

  function sortBy(table, header, index) {
    var numeric = header.getAttribute("data-type") === "num";
    var current = header.getAttribute("aria-sort");
    // first click: numbers high to low, text A to Z; then toggle
    var order = current ? (current === "ascending" ? "descending" : "ascending")
                        : (numeric ? "descending" : "ascending");
    var sign = order === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, i) { row.dataset.position = i; });
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null && y === null) return a.dataset.position - b.dataset.position;
      if (x === null) return 1;  // missing values last, whatever the order
      if (y === null) return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a.dataset.position - b.dataset.position;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", order);
  }

  function enhance(table) {
    var head = table.tHead;
    if (!head || !table.tBodies.length) return;
    Array.prototype.forEach.call(head.rows[0].cells, function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      while (th.firstChild) button.appendChild(th.firstChild);
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, th, index); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), enhance);
  });
})();
