/* The history site's filters (trainclaims/history/site.py inlines this into the overview and the
   claim pages). Every run column carries data-age (0: the newest), data-torch and data-machine;
   the overview's claim rows (#verdicts) data-row-mode and data-row-device ("*": every mode or
   device), data-deviceless where the claim's tests take no device, and class "never" where no run
   measured them; a claim's page shows all of its rows. The
   choices are kept in the address's "#" (index.html#torch=2.14.1&device=cpu opens filtered). */
(function () {
  "use strict";
  var controls = Array.prototype.slice.call(document.querySelectorAll(".filter"));
  if (!controls.length) return;
  var params = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p[0]) params[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });
  controls.forEach(function (c) {
    if (params[c.name] !== undefined) {
      if (c.type === "checkbox") c.checked = params[c.name] === "1";
      else c.value = params[c.name];
    }
    c.addEventListener("change", apply);
  });
  function value(name) {
    var c = document.querySelector(".filter[name='" + name + "']");
    if (!c) return "";
    return c.type === "checkbox" ? (c.checked ? "1" : "") : c.value;
  }
  function apply() {
    var f = {torch: value("torch"), machine: value("machine"), mode: value("mode"), device: value("device"),
      runs: value("runs"), never: value("never")};
    var limit = f.runs === "all" || !f.runs ? Infinity : parseInt(f.runs, 10);
    var runs = 0, runsShown = 0, rows = 0, rowsShown = 0, neverHidden = 0;
    document.querySelectorAll("[data-age]").forEach(function (el) {
      var hide = parseInt(el.dataset.age, 10) >= limit ||
        (f.torch && el.dataset.torch !== f.torch) || (f.machine && el.dataset.machine !== f.machine);
      el.hidden = !!hide;
      if (el.tagName === "TH" && el.classList.contains("run") && el.closest("#verdicts")) {
        runs++;
        if (!hide) runsShown++;
      }
    });
    document.querySelectorAll("#verdicts tr[data-row-mode]").forEach(function (tr) {
      var device = f.device || "*";
      var modeOk = tr.dataset.rowMode === (f.mode || "*");
      var deviceOk = tr.dataset.rowDevice === device || (device !== "*" && tr.dataset.rowDevice === "*" &&
        tr.dataset.deviceless === "1");
      var show = modeOk && deviceOk;
      if (show && tr.classList.contains("never") && !f.never) {
        show = false;
        neverHidden++;
      }
      tr.hidden = !show;
      if (tr.dataset.rowMode === "*" && tr.dataset.rowDevice === "*") rows++;
      if (show) rowsShown++;
    });
    document.querySelectorAll("tr[data-step]").forEach(function (tr) {
      var hide = (f.device && f.device !== "*" && tr.dataset.device && tr.dataset.device !== f.device) ||
        (f.mode && f.mode !== "*" && tr.dataset.mode && tr.dataset.mode !== f.mode) ||
        (f.torch && tr.dataset.runTorch !== f.torch) || (f.machine && tr.dataset.runMachine !== f.machine);
      tr.hidden = !!hide;
    });
    document.querySelectorAll("tr[data-bench-device]").forEach(function (tr) {
      tr.hidden = !!(f.device && f.device !== "*" && tr.dataset.benchDevice !== f.device) ||
        !!(f.machine && tr.dataset.benchMachine !== f.machine);
    });
    var note = document.getElementById("shown");
    if (note) {
      note.textContent = "Showing " + runsShown + " of " + runs + " runs and " + rowsShown + " claim rows (" + rows +
        " claims" + (neverHidden ? "; " + neverHidden + " never measured, hidden" : "") + ").";
    }
    var hash = controls.filter(function (c) {
      var v = value(c.name);
      return v && v !== "*" && !(c.name === "runs" && v === c.dataset.default);
    }).map(function (c) { return c.name + "=" + encodeURIComponent(value(c.name)); }).join("&");
    try { history.replaceState(null, "", hash ? "#" + hash : location.pathname); } catch (e) { /* file:// */ }
  }
  apply();
})();
