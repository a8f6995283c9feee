(function () {
  "use strict";
  // The report's item table: searched, sorted and paged here, from the JSON block beside it.
  // Every value is set as text (never as HTML), so a manifest's markup stays inert.
  var data = JSON.parse(document.getElementById("items-data").textContent);
  var columns = data.columns;
  var numeric = data.numeric;
  var rows = data.rows;
  var PAGE = 50;
  var view = rows.map(function (_, i) { return i; });
  var sortColumn = 0;
  var descending = false;
  var page = 0;
  var haystack = rows.map(function (row) {
    return row.map(function (v) { return v === null ? "" : String(v); }).join("\u0001").toLowerCase();
  });
  var body = document.getElementById("items-body");
  var info = document.getElementById("items-info");
  var search = document.getElementById("items-search");
  var head = document.getElementById("items-head");
  var stateColumn = columns.indexOf("state");
  var outputColumn = columns.indexOf("output");
  var uriColumn = columns.indexOf("output_uri");
  var errorColumn = columns.indexOf("error");
  var hintColumn = columns.indexOf("hint");

  function compare(a, b) {
    var x = rows[a][sortColumn];
    var y = rows[b][sortColumn];
    if (x === y) { return a - b; }
    if (x === null) { return 1; }
    if (y === null) { return -1; }
    var order = numeric[sortColumn] ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  }

  function refresh() {
    var query = search.value.trim().toLowerCase();
    view = [];
    for (var i = 0; i < rows.length; i++) {
      if (!query || haystack[i].indexOf(query) !== -1) { view.push(i); }
    }
    view.sort(compare);
    page = Math.min(page, Math.max(0, Math.ceil(view.length / PAGE) - 1));
    render();
  }

  function cell(row, index) {
    var td = document.createElement("td");
    var value = row[index];
    if (numeric[index]) { td.className = "num"; }
    if (index === stateColumn) { td.className = "state " + value; }
    if (index === outputColumn && value) {
      var uri = row[uriColumn];
      if (uri && /^https?:\/\//.test(uri)) {
        var link = document.createElement("a");
        link.href = uri;
        link.textContent = value;
        td.appendChild(link);
        return td;
      }
    }
    if (index === errorColumn && value) {
      var error = document.createElement("span");
      error.className = "error";
      error.textContent = value;
      td.appendChild(error);
      if (row[hintColumn]) {
        var hint = document.createElement("div");
        hint.className = "hint";
        hint.textContent = row[hintColumn];
        td.appendChild(hint);
      }
      return td;
    }
    td.textContent = value === null ? "" : String(value);
    return td;
  }

  function render() {
    var fragment = document.createDocumentFragment();
    var first = page * PAGE;
    var shown = view.slice(first, first + PAGE);
    shown.forEach(function (i) {
      var tr = document.createElement("tr");
      for (var c = 0; c < columns.length; c++) {
        if (c === uriColumn || c === hintColumn) { continue; }
        tr.appendChild(cell(rows[i], c));
      }
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    info.textContent = view.length
      ? "items " + (first + 1) + "–" + (first + shown.length) + " of " + view.length +
        (view.length < rows.length ? " found (" + rows.length + " in all)" : "")
      : "no item matches";
    head.querySelectorAll("th").forEach(function (th) {
      var index = Number(th.dataset.column);
      th.setAttribute("aria-sort", index === sortColumn ? (descending ? "descending" : "ascending") : "none");
    });
  }

  head.querySelectorAll("th").forEach(function (th) {
    th.addEventListener("click", function () {
      var index = Number(th.dataset.column);
      descending = index === sortColumn ? !descending : false;
      sortColumn = index;
      refresh();
    });
  });
  search.addEventListener("input", function () { page = 0; refresh(); });
  document.getElementById("items-previous").addEventListener("click", function () {
    if (page > 0) { page -= 1; render(); }
  });
  document.getElementById("items-next").addEventListener("click", function () {
    if ((page + 1) * PAGE < view.length) { page += 1; render(); }
  });
  refresh();
})();
