/* kseg — small progressive enhancements; every page works without them, except live updates.
 *
 * - times shown in the browser's time zone
 * - submit form: drag and drop, chosen files listed, size limit checked before sending,
 *   k fixed/auto toggles its inputs
 * - job page: polls GET /api/v1/jobs/<id> every 300 ms while queued or running, reloads
 *   when it ends; before/after slider
 * - history: live status of queued and running jobs
 */
(function () {
  "use strict";

  var FINAL = { succeeded: true, failed: true, canceled: true };
  var STATUS_TEXT = {
    queued: "Queued", running: "Running", succeeded: "Done", failed: "Failed", canceled: "Canceled"
  };

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function humanBytes(n) {
    var units = [["GB", 1073741824], ["MB", 1048576], ["KB", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][1]) { return (n / units[i][1]).toFixed(1).replace(/\.0$/, "") + " " + units[i][0]; }
    }
    return n + " bytes";
  }

  function getJSON(url) {
    return fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      if (!response.ok) {
        var err = new Error("HTTP " + response.status);
        err.status = response.status;
        throw err;
      }
      return response.json();
    });
  }

  /* ------------------------------------------------------------ local times */

  $all("time[datetime][data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when.getTime())) {
      el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
      });
    }
  });

  /* ------------------------------------------------------------ submit form */

  var form = $("[data-submit-form]");
  if (form) {
    var input = $("#file", form);
    var zone = $("[data-dropzone]", form);
    var chosen = $("[data-chosen]", form);
    var sizeError = $("[data-size-error]", form);
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    var maxSize = form.getAttribute("data-max-size");
    var useUpload = $("[data-source-upload]", form);

    var showFiles = function () {
      chosen.textContent = "";
      var total = 0;
      Array.prototype.forEach.call(input.files || [], function (file) {
        total += file.size;
        var li = document.createElement("li");
        li.textContent = file.name + " · " + humanBytes(file.size);
        chosen.appendChild(li);
      });
      var tooBig = maxBytes && total > maxBytes;
      sizeError.hidden = !tooBig;
      sizeError.textContent = tooBig
        ? "These files add up to " + humanBytes(total) + ", over the " + maxSize +
          " limit; choose fewer or smaller files."
        : "";
      if (tooBig) { $all("li", chosen).forEach(function (li) { li.classList.add("too-big"); }); }
      if (input.files && input.files.length && useUpload) { useUpload.checked = true; }
      return !tooBig;
    };
    input.addEventListener("change", showFiles);

    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("is-over");
      });
    });
    ["dragleave", "dragend", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("is-over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        showFiles();
      }
    });

    // k: a fixed number, or auto with a range; only the inputs of the chosen mode are sent.
    var kNumber = $("[data-k-number]", form);
    var kAuto = $all("[data-k-auto]", form);
    var kRange = $("[data-k-range]", form);
    var syncK = function () {
      var checked = $("[data-k-mode]:checked", form);
      var auto = checked && checked.value === "auto";
      kNumber.disabled = auto;
      kAuto.forEach(function (el) { el.disabled = !auto; });
      kRange.classList.toggle("is-off", !auto);
    };
    $all("[data-k-mode]", form).forEach(function (radio) { radio.addEventListener("change", syncK); });
    kNumber.addEventListener("focus", function () {
      var fixed = $("[data-k-mode][value=number]", form);
      if (fixed && !fixed.checked) { fixed.checked = true; syncK(); }
    });
    syncK();

    form.addEventListener("submit", function (event) {
      if (!showFiles()) {
        event.preventDefault();
        input.focus();
        return;
      }
      var button = $("[data-submit-button]", form);
      // Disable after this tick, so the button's own value is still part of the submission.
      window.setTimeout(function () { button.disabled = true; button.textContent = "Uploading…"; }, 0);
    });

    // Coming back with the Back button: the button must work again.
    window.addEventListener("pageshow", function () {
      var button = $("[data-submit-button]", form);
      button.disabled = false;
      button.textContent = "Segment";
    });

    var errors = $("#form-errors");
    if (errors) { errors.focus(); }
  }

  /* ------------------------------------------------------------ job page: live progress */

  var watch = $("[data-watch-job]");
  if (watch) {
    var url = watch.getAttribute("data-watch-job");
    var bar = $("#job-progress");
    var pctText = $("[data-progress-text]", watch);
    var statusText = $("[data-watch-status]", watch);
    var badge = $(".job-title [data-badge]");
    var delay = 300;
    var failures = 0;

    var show = function (job) {
      var pct = Math.max(parseInt(bar.value, 10) || 0, job.progress || 0);
      if (job.status === "succeeded") { pct = 100; }
      bar.value = pct;
      bar.textContent = pct + " %";
      pctText.textContent = pct + " %";
      var text;
      if (job.status === "queued") { text = "Queued — waiting for a worker…"; }
      else if (job.status === "running") { text = "Running" + (job.stage ? " — " + job.stage : "") + "…"; }
      else if (job.status === "succeeded") { text = "Done — loading the results…"; }
      else { text = (STATUS_TEXT[job.status] || job.status) + " — loading…"; }
      if (statusText.textContent.trim() !== text) { statusText.textContent = text; }
      if (badge) {
        badge.className = "badge badge-" + job.status;
        badge.textContent = (STATUS_TEXT[job.status] || job.status) +
          (job.status === "running" ? " " + pct + " %" : "");
      }
      watch.setAttribute("data-status", job.status);
    };

    var tick = function () {
      getJSON(url).then(function (job) {
        failures = 0;
        show(job);
        if (FINAL[job.status]) {
          window.setTimeout(function () { window.location.reload(); }, 250);
          return;
        }
        window.setTimeout(tick, delay);
      }).catch(function (err) {
        failures += 1;
        if (err.status === 401 || err.status === 404) {
          statusText.textContent = err.status === 401
            ? "You were signed out; reload the page to sign in again."
            : "This job no longer exists.";
          return;
        }
        statusText.textContent = "Connection lost — retrying…";
        window.setTimeout(tick, Math.min(5000, delay * Math.pow(2, failures)));
      });
    };
    window.setTimeout(tick, delay);
  }

  /* ------------------------------------------------------------ job page: before/after */

  $all("[data-compare]").forEach(function (box) {
    var range = $("[data-compare-range]", box);
    var move = function () { box.style.setProperty("--pos", range.value + "%"); };
    range.addEventListener("input", move);
    move();
  });

  /* ------------------------------------------------------------ history: live rows */

  var live = $all("[data-live-job]");
  if (live.length) {
    var pollRows = function () {
      var pending = $all("[data-live-job]");
      if (!pending.length) { return; }
      Promise.all(pending.map(function (row) {
        return getJSON(row.getAttribute("data-live-job")).then(function (job) {
          var b = $("[data-badge]", row);
          b.className = "badge badge-" + job.status;
          b.textContent = (STATUS_TEXT[job.status] || job.status) +
            (job.status === "running" ? " " + (job.progress || 0) + " %" : "");
          if (FINAL[job.status]) {
            row.removeAttribute("data-live-job");
            var outputs = (job.result && job.result.outputs) || {};
            if (outputs.recolor) { $("[data-thumb]", row).src = outputs.recolor; }
          }
        }).catch(function () { /* try again next round */ });
      })).then(function () { window.setTimeout(pollRows, 1000); });
    };
    window.setTimeout(pollRows, 1000);
  }
})();
