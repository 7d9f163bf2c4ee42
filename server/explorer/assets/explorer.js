// Cardinal's explorer: the page reads fine without this script. It only
// edits the per-workload limits (PUT and DELETE /api/v1/limits/{workload}
// with the admin token typed into the page, which stays in memory) and
// refreshes the sections in place.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var adminOn = document.body.dataset.admin === "on";
  var status = document.getElementById("limit-status");
  var tokenInput = document.getElementById("admin-token");

  function enableEditing() {
    if (!adminOn) return;
    document.querySelectorAll("fieldset.edit").forEach(function (f) { f.disabled = false; });
  }

  function say(text, ok) {
    if (!status) return;
    status.textContent = text;
    status.className = "status " + (ok ? "ok" : "bad");
  }

  // limitsURL is relative, so that the page works behind a path prefix.
  function limitsURL(workload) {
    return "api/v1/limits/" + encodeURIComponent(workload);
  }

  async function call(method, workload, body) {
    var token = tokenInput ? tokenInput.value.trim() : "";
    if (!token) {
      say("Type the admin token first.", false);
      if (tokenInput) tokenInput.focus();
      return false;
    }
    var init = { method: method, headers: { "Authorization": "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var resp;
    try {
      resp = await fetch(limitsURL(workload), init);
    } catch (e) {
      say(method + " " + workload + ": " + e, false);
      return false;
    }
    if (resp.ok) return true;
    var msg = resp.status + " " + resp.statusText;
    try {
      var j = await resp.json();
      if (j && j.error) msg = resp.status + ": " + j.error;
    } catch (e) { /* not JSON */ }
    say(method + " " + workload + " failed, " + msg, false);
    return false;
  }

  document.addEventListener("submit", async function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("limit-form")) return;
    ev.preventDefault();
    var workload = form.dataset.workload || (form.elements.workload && form.elements.workload.value.trim());
    var raw = form.elements.max_series.value.trim();
    var n = Number(raw);
    if (!workload) { say("Name the workload.", false); return; }
    if (raw === "" || !Number.isInteger(n) || n < 0) { say("The cap must be a whole number, 0 or more.", false); return; }
    if (await call("PUT", workload, { max_series: n })) {
      say("Cap of " + workload + " set to " + (n === 0 ? "unlimited" : n.toLocaleString("en-US")) + ".", true);
      form.reset();
      dirty = false;
      refresh(true);
    }
  });

  document.addEventListener("click", async function (ev) {
    var b = ev.target.closest && ev.target.closest("button.delete");
    if (!b) return;
    var workload = b.dataset.workload;
    if (await call("DELETE", workload)) {
      say("API override of " + workload + " removed; the config's cap or the default applies.", true);
      dirty = false;
      refresh(true);
    }
  });

  // A limit being typed is not replaced by a refresh.
  var dirty = false;
  document.addEventListener("input", function (ev) {
    if (ev.target.closest && ev.target.closest("#limits")) dirty = true;
  });

  // Refresh: fetch the page again and swap the sections marked
  // data-refresh; the token field and the status line stay.
  var refreshed = document.getElementById("refreshed");
  async function refresh(force) {
    var resp;
    try {
      resp = await fetch(location.pathname + location.search, { headers: { "Accept": "text/html" }, cache: "no-store" });
    } catch (e) {
      if (refreshed) refreshed.textContent = "refresh failed: " + e;
      return;
    }
    if (!resp.ok) {
      if (refreshed) refreshed.textContent = "refresh failed: " + resp.status;
      return;
    }
    var doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    var editing = dirty || (document.activeElement && document.activeElement.closest && document.activeElement.closest("#limits-rows"));
    doc.querySelectorAll("[data-refresh]").forEach(function (fresh) {
      var old = document.getElementById(fresh.id);
      if (!old) return;
      if (!force && editing && old.hasAttribute("data-keep-while-editing")) return;
      old.replaceWith(document.importNode(fresh, true));
    });
    enableEditing();
    if (refreshed) refreshed.textContent = "updated " + new Date().toLocaleTimeString();
  }

  var timer = null;
  var every = document.getElementById("refresh-every");
  function schedule() {
    if (timer) clearInterval(timer);
    timer = null;
    var s = Number(every.value);
    if (s > 0) timer = setInterval(function () { refresh(false); }, s * 1000);
    try { localStorage.setItem("cardinal.explorer.refresh", String(s)); } catch (e) { /* storage off */ }
  }
  if (every) {
    try {
      var saved = localStorage.getItem("cardinal.explorer.refresh");
      if (saved !== null && every.querySelector('option[value="' + saved + '"]')) every.value = saved;
    } catch (e) { /* storage off */ }
    every.addEventListener("change", schedule);
    schedule();
  }
  var now = document.getElementById("refresh-now");
  if (now) now.addEventListener("click", function () { refresh(true); });

  enableEditing();
})();
