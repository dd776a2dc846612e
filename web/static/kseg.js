/* kseg — small progressive enhancements; every page works without them, except live updates.
 *
 * - times shown in the browser's time zone
 * - submit form: drag and drop, chosen files listed (unusable ones left out, with why), size
 *   limit checked before sending, k fixed/auto toggles its inputs, "from" ≤ "to" and at least
 *   one output checked before sending, images kept from a refused try can be removed
 * - job page: polls GET /api/v1/jobs/<id> every 300 ms while queued or running, reloads
 *   when it ends; before/after slider; the lightbox: the original and outputs full size in
 *   a modal dialog (←/→ or a swipe between them, 1:1 zoom panned by scrolling or dragging,
 *   download; Esc closes; focus stays inside and goes back to the tile)
 * - history: live status of queued and running jobs
 * - thumbnails: tiles swapped in live show the API's small thumbnails, not full-size files
 * - galleries: "add images" like the submit form; running runs' counters (polls
 *   GET /api/v1/runs/<id>) and the thumbnail grid (polls GET /api/v1/galleries/<id>/images)
 *   update in place; a run page's image rows too (GET /api/v1/runs/<id>/jobs); "use my time
 *   zone"; forms with data-confirm ask first
 * - account: copy buttons for a new token and its curl line
 */
(function () {
  "use strict";

  var FINAL = { succeeded: true, failed: true, canceled: true };
  var STATUS_TEXT = {
    queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", canceled: "Canceled"
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

  // The thumbnail of a full-size image URL of the API (an original's .../file or an output's
  // .../outputs/<name>.png) at size px: the same mapping as web/pages/present.py thumb().
  var FULL_SIZE = /^(\/api\/v1\/images\/[^\/?#]+)\/file$|^(\/api\/v1\/jobs\/[^\/?#]+\/outputs\/[a-z]+)\.png$/;
  function thumbOf(url, size) {
    var match = FULL_SIZE.exec(url || "");
    if (!match || !size) { return url; }
    return (match[1] || match[2]) + "/thumbnail?size=" + size;
  }
  function showThumb(img, url) {
    var src = thumbOf(url, img.getAttribute("data-thumb-size"));
    if (src && img.getAttribute("src") !== src) { img.setAttribute("src", src); }
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

  /* ------------------------------------------------------------ upload forms */

  // What the server reads (web/pages/present.py FIELDS "file"): by MIME type, or by name
  // where the browser gives no type; the server still checks each file's bytes.
  var IMAGE_TYPE = /^image\/(png|jpeg|gif|webp|tiff|bmp|x-ms-bmp)$/;
  var IMAGE_NAME = /\.(png|jpe?g|gif|webp|tiff?|bmp)$/i;

  // Why a chosen file cannot be used ("" when it can).
  var fileProblem = function (file, maxBytes, maxSize) {
    var named = IMAGE_NAME.test(file.name) || !/\.[^.\/]+$/.test(file.name);
    var typed = file.type
      ? IMAGE_TYPE.test(file.type) || (file.type === "application/octet-stream" && named)
      : named;
    if (!typed) { return "not an image (PNG, JPEG, GIF, WebP, TIFF or BMP)"; }
    if (maxBytes && file.size > maxBytes) { return "over the size limit (" + maxSize + ")"; }
    return "";
  };

  // The submit form and a gallery's "add images" form: drag and drop, the chosen files
  // listed, the size limit checked before sending, the button disabled while uploading.
  // Files that cannot be used are left out of a drop or choice and listed with why, so one
  // bad file does not cost the good ones; when none is good they are sent as they are, and
  // the server's answer says what is wrong (as without this script).
  var uploadForm = function (form) {
    var input = $("input[type=file]", form);
    var zone = $("[data-dropzone]", form);
    var chosen = $("[data-chosen]", form);
    var sizeError = $("[data-size-error]", form);
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    var maxSize = form.getAttribute("data-max-size");
    var useUpload = $("[data-source-upload]", form);
    var button = $("[data-submit-button]", form);
    var label = button.textContent;
    var leftOut = [];  // [file, why, taken out of the input] of the last choice

    var showFiles = function () {
      chosen.textContent = "";
      var total = 0;
      var isBad = function (file) {
        return leftOut.some(function (bad) {
          return bad[0].name === file.name && bad[0].size === file.size;
        });
      };
      Array.prototype.forEach.call(input.files || [], function (file) {
        total += file.size;
        if (isBad(file)) { return; }  // none was usable: listed below, with why
        var li = document.createElement("li");
        li.textContent = file.name + " · " + humanBytes(file.size);
        chosen.appendChild(li);
      });
      leftOut.forEach(function (bad) {
        var li = document.createElement("li");
        li.className = "is-bad";
        li.setAttribute("data-left-out", "");
        li.textContent = bad[0].name + ": " + bad[1] + (bad[2] ? " — left out" : "");
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

    // A new choice or drop: keep the usable files in the input, list the others.
    var pickFiles = function (files) {
      var good = [];
      leftOut = [];
      Array.prototype.forEach.call(files || [], function (file) {
        var why = fileProblem(file, maxBytes, maxSize);
        if (why) { leftOut.push([file, why]); } else { good.push(file); }
      });
      var keep = files;
      if (good.length && leftOut.length && window.DataTransfer) {
        try {
          var only = new DataTransfer();
          good.forEach(function (file) { only.items.add(file); });
          keep = only.files;
          leftOut.forEach(function (bad) { bad.push(true); });
        } catch (e) { keep = files; }
      }
      if (keep !== input.files) { input.files = keep; }
      showFiles();
    };
    input.addEventListener("change", function () { pickFiles(input.files); });

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
        pickFiles(event.dataTransfer.files);
      }
    });

    form.addEventListener("submit", function (event) {
      if (!showFiles()) {
        event.preventDefault();
        input.focus();
        return;
      }
      // Disable after this tick, so the button's own value is still part of the submission.
      window.setTimeout(function () { button.disabled = true; button.textContent = "Uploading…"; }, 0);
    });

    // Coming back with the Back button: the button must work again.
    window.addEventListener("pageshow", function () {
      button.disabled = false;
      button.textContent = label;
    });
  };
  $all("[data-submit-form], [data-upload-form]").forEach(uploadForm);

  /* ------------------------------------------------------------ parameter fields: k */

  // k: a fixed number, or auto with a range; only the inputs of the chosen mode are sent.
  $all("[data-k-fieldset]").forEach(function (fieldset) {
    var kNumber = $("[data-k-number]", fieldset);
    var kAuto = $all("[data-k-auto]", fieldset);
    var kRange = $("[data-k-range]", fieldset);
    // "from" ≤ "to", in the server's words (web/pages/present.py field_error), on "from":
    // the browser then refuses to submit and says so there. (A disabled input, in fixed
    // mode, is not checked.) min and max are the inputs' own attributes.
    var checkRange = function () {
      var low = parseInt(kAuto[0].value, 10);
      var high = parseInt(kAuto[1].value, 10);
      var wrong = low > high;  // false when either is not a number
      kAuto[0].setCustomValidity(wrong
        ? "\u201cfrom\u201d (" + low + ") must not exceed \u201cto\u201d (" + high + ")." : "");
    };
    var syncK = function () {
      var checked = $("[data-k-mode]:checked", fieldset);
      var auto = checked && checked.value === "auto";
      kNumber.disabled = auto;
      kAuto.forEach(function (el) { el.disabled = !auto; });
      kRange.classList.toggle("is-off", !auto);
      checkRange();
    };
    kAuto.forEach(function (el) { el.addEventListener("input", checkRange); });
    $all("[data-k-mode]", fieldset).forEach(function (radio) { radio.addEventListener("change", syncK); });
    kNumber.addEventListener("focus", function () {
      var fixed = $("[data-k-mode][value=number]", fieldset);
      if (fixed && !fixed.checked) { fixed.checked = true; syncK(); }
    });
    syncK();
  });

  // Outputs: at least one ticked, or the browser refuses to submit (the server's rule too).
  $all("fieldset#outputs").forEach(function (fieldset) {
    var boxes = $all("input[type=checkbox][name=outputs]", fieldset);
    if (!boxes.length) { return; }
    var checkOutputs = function () {
      var none = !boxes.some(function (box) { return box.checked; });
      boxes[0].setCustomValidity(none ? "Tick at least one output." : "");
    };
    boxes.forEach(function (box) { box.addEventListener("change", checkOutputs); });
    checkOutputs();
  });

  /* ------------------------------------------------------------ submit form: kept images */

  // Images kept from a try the server refused (a form error): each is sent again by id
  // unless removed here. Without this script the list stays as it is.
  $all("[data-kept]").forEach(function (kept) {
    $all("[data-kept-remove]", kept).forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var item = button.closest("[data-kept-item]");
        var next = item.nextElementSibling || item.previousElementSibling;
        item.parentNode.removeChild(item);
        if (next) {
          $("[data-kept-remove]", next).focus();
        } else {
          kept.hidden = true;
          var file = document.getElementById("file");
          if (file) { file.focus(); }
        }
      });
    });
  });

  var formErrors = $("#form-errors");
  if (formErrors) { formErrors.focus(); }

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

  /* ------------------------------------------------------------ job page: the lightbox */

  var lightbox = $("[data-lightbox]");
  var lightboxLinks = $all("[data-lightbox-item]");
  if (lightbox && lightbox.showModal && lightboxLinks.length) {
    var lbImg = $("[data-lightbox-img]", lightbox);
    var lbStage = $("[data-lightbox-stage]", lightbox);
    var lbTitle = $("[data-lightbox-title]", lightbox);
    var lbZoom = $("[data-lightbox-zoom]", lightbox);
    var lbDownload = $("[data-lightbox-download]", lightbox);
    var lbItems = lightboxLinks.map(function (a) {
      var thumb = $("img", a);
      return {
        href: a.getAttribute("href"),
        name: thumb.getAttribute("data-output"),
        alt: thumb.getAttribute("alt"),
        download: a.getAttribute("data-download")
      };
    });
    var lbIndex = 0;
    var lbOpener = null;
    var lbActual = false;

    var fitActual = function () {
      // One image pixel per screen pixel: CSS pixels are devicePixelRatio screen pixels.
      lbImg.style.width = lbActual && lbImg.naturalWidth
        ? (lbImg.naturalWidth / (window.devicePixelRatio || 1)) + "px" : "";
    };
    var setActual = function (on) {
      lbActual = on;
      lbZoom.setAttribute("aria-pressed", on ? "true" : "false");
      lightbox.classList.toggle("is-actual", on);
      fitActual();
    };
    var showItem = function (i) {
      var n = lbItems.length;
      lbIndex = ((i % n) + n) % n;
      var item = lbItems[lbIndex];
      lbImg.setAttribute("src", item.href);
      lbImg.setAttribute("alt", item.alt || item.name);
      lbTitle.textContent = item.name + " · " + (lbIndex + 1) + " / " + n;
      lbDownload.setAttribute("href", item.href);
      lbDownload.setAttribute("download", item.download || "");
      lightbox.setAttribute("data-current", item.name);
      $("[data-lightbox-note]", lightbox).hidden = item.name !== "labels";
      lbStage.scrollLeft = 0;
      lbStage.scrollTop = 0;
      fitActual();
      // The neighbours next, so that ←/→ show them at once.
      [lbIndex + 1, lbIndex - 1].forEach(function (j) {
        var next = lbItems[((j % n) + n) % n];
        if (!next.preloaded) { next.preloaded = true; (new Image()).src = next.href; }
      });
    };
    lbImg.addEventListener("load", fitActual);

    lightboxLinks.forEach(function (a, i) {
      a.addEventListener("click", function (event) {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
          return;  // a new tab or a download, as the link says
        }
        event.preventDefault();
        lbOpener = a;
        setActual(false);
        showItem(i);
        lightbox.showModal();
        $("[data-lightbox-close]", lightbox).focus();
      });
    });
    lightbox.addEventListener("close", function () {
      lbImg.removeAttribute("src");
      if (lbOpener) { lbOpener.focus(); }
    });
    $("[data-lightbox-close]", lightbox).addEventListener("click", function () { lightbox.close(); });
    $("[data-lightbox-prev]", lightbox).addEventListener("click", function () { showItem(lbIndex - 1); });
    $("[data-lightbox-next]", lightbox).addEventListener("click", function () { showItem(lbIndex + 1); });
    lbZoom.addEventListener("click", function () { setActual(!lbActual); });
    // A click on the dark backdrop around the picture closes it.
    lightbox.addEventListener("click", function (event) {
      if (event.target === lightbox || (event.target === lbStage && !lbActual)) { lightbox.close(); }
    });
    lightbox.addEventListener("keydown", function (event) {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        event.preventDefault();
        showItem(lbIndex + (event.key === "ArrowRight" ? 1 : -1));
      } else if (event.key === "Tab") {
        // Focus stays in the dialog: from the last control to the first and back.
        var controls = $all("button, a[href]", lightbox);
        var first = controls[0];
        var last = controls[controls.length - 1];
        var inside = lightbox.contains(document.activeElement);
        if (event.shiftKey && (document.activeElement === first || !inside)) {
          event.preventDefault();
          last.focus();
        } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
          event.preventDefault();
          first.focus();
        }
      }
    });
    // Touch: a swipe sideways shows the next or previous one (at 1:1 a finger pans instead);
    // a mouse drags the picture around at 1:1.
    var drag = null;
    lbStage.addEventListener("pointerdown", function (event) {
      drag = { x: event.clientX, y: event.clientY, left: lbStage.scrollLeft, top: lbStage.scrollTop,
               type: event.pointerType };
    });
    lbStage.addEventListener("pointermove", function (event) {
      if (drag && lbActual && drag.type === "mouse") {
        lbStage.scrollLeft = drag.left - (event.clientX - drag.x);
        lbStage.scrollTop = drag.top - (event.clientY - drag.y);
      }
    });
    var endDrag = function (event) {
      if (!drag) { return; }
      var dx = event.clientX - drag.x;
      var dy = event.clientY - drag.y;
      var swiped = drag.type !== "mouse" && !lbActual && Math.abs(dx) > 50 && Math.abs(dx) > Math.abs(dy);
      drag = null;
      if (swiped) { showItem(lbIndex + (dx < 0 ? 1 : -1)); }
    };
    lbStage.addEventListener("pointerup", endDrag);
    lbStage.addEventListener("pointercancel", function () { drag = null; });
  }

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
            if (outputs.recolor) { showThumb($("[data-thumb]", row), outputs.recolor); }
          }
        }).catch(function () { /* try again next round */ });
      })).then(function () { window.setTimeout(pollRows, 1000); });
    };
    window.setTimeout(pollRows, 1000);
  }

  /* ------------------------------------------------------------ galleries */

  var RUN_TEXT = { running: "Running", succeeded: "Succeeded", partial: "Partly failed", failed: "Failed" };
  var COUNTERS = ["succeeded", "failed", "running", "queued", "skipped"];

  // Poll url (or call load, a function returning a promise) every delay ms while
  // handle(json) returns true; back off on errors, stop on 401/404 (signed out, or gone).
  var poll = function (url, handle, delay) {
    var failures = 0;
    var load = typeof url === "function" ? url : function () { return getJSON(url); };
    var tick = function () {
      load().then(function (data) {
        failures = 0;
        if (handle(data)) { window.setTimeout(tick, delay); }
      }).catch(function (err) {
        failures += 1;
        if (err.status === 401 || err.status === 404) { return; }
        window.setTimeout(tick, Math.min(5000, delay * Math.pow(2, failures)));
      });
    };
    window.setTimeout(tick, delay);
  };

  // The same words as web/pages/galleries.py counters().
  var counterWords = function (c) {
    var done = c.succeeded + c.failed + c.skipped;
    var details = [c.succeeded + " succeeded"];
    if (c.failed) { details.push(c.failed + " failed"); }
    if (c.skipped) { details.push(c.skipped + " skipped (up to date)"); }
    if (c.running) { details.push(c.running + " running"); }
    var handed = c.dispatched || 0;
    if (handed) { details.push(handed + " next in line"); }
    if (c.queued - handed > 0) { details.push((c.queued - handed) + " waiting"); }
    return {
      text: done + "/" + c.total + " done",
      detail: details.join(" · "),
      label: done + " of " + c.total + " images done: " + details.join(", ")
    };
  };

  var showRun = function (el, run) {
    var c = run.jobs;
    COUNTERS.forEach(function (name) {
      var seg = $("[data-seg=" + name + "]", el);
      if (seg) { seg.style.width = (c.total ? c[name] / c.total * 100 : 0) + "%"; }
    });
    var words = counterWords(c);
    var text = $("[data-counter-text]", el);
    if (text.textContent !== words.text) { text.textContent = words.text; }
    $("[data-counter-detail]", el).textContent = words.detail;
    $("[data-counter-bar]", el).setAttribute("aria-label", words.label);
    el.setAttribute("data-status", run.status);
    var badges = $all("[data-run-badge]", el);
    if (el.matches(".run-progress")) { badges = badges.concat($all(".job-title [data-run-badge]")); }
    badges.forEach(function (badge) {
      badge.className = "badge badge-" + run.status;
      badge.textContent = RUN_TEXT[run.status] || run.status;
    });
    if (run.status !== "running") {
      el.removeAttribute("data-live-run");
      var announce = $("[data-run-announce]", el);
      if (announce) { announce.textContent = "The run ended: " + (RUN_TEXT[run.status] || run.status) + ", " + words.text + "."; }
    }
  };

  // Runs: the galleries' run rows. (The run page's progress comes with its rows, and a
  // watched grid's run rows with its tiles, below.)
  var grid = $("[data-grid][data-watch-grid]");
  $all("[data-live-run]").forEach(function (el) {
    if (el.matches(".run-progress") && $("[data-run-jobs]")) { return; }
    if (el.matches(".runrow") && grid) { return; }
    poll(el.getAttribute("data-live-run"), function (run) {
      showRun(el, run);
      return run.status === "running";
    }, 700);
  });

  var jobBadge = function (badge, status, progress) {
    badge.className = "badge badge-" + status;
    badge.textContent = (STATUS_TEXT[status] || status) +
      (status === "running" ? " " + (progress || 0) + " %" : "");
  };

  // A gallery's grid: each image shows its current job's recolor (or the original) and
  // status: the newest run's job, or the image's current result however it was made. The
  // running runs' rows are asked for at the same moment and shown in the same step, so
  // their counters and the tiles change together.
  if (grid) {
    var gridLastLook = false;
    var loadGrid = function () {
      var rows = $all(".runrow[data-live-run]");
      var asks = [getJSON(grid.getAttribute("data-grid"))].concat(rows.map(function (row) {
        return getJSON(row.getAttribute("data-live-run")).catch(function () { return null; });
      }));
      return Promise.all(asks).then(function (answers) {
        return { page: answers[0], rows: rows, runs: answers.slice(1) };
      });
    };
    poll(loadGrid, function (both) {
      var page = both.page;
      both.rows.forEach(function (row, i) { if (both.runs[i]) { showRun(row, both.runs[i]); } });
      var active = false;
      page.items.forEach(function (item) {
        var tile = $("[data-image-id=\"" + item.id + "\"]", grid);
        var job = item.current_job;
        if (!tile || !job) { return; }
        if (!FINAL[job.status]) { active = true; }
        tile.setAttribute("data-status", job.status);
        jobBadge($("[data-badge]", tile), job.status, job.progress);
        showThumb($("[data-tile-img]", tile), job.recolor_url || item.links.file);
        $("[data-tile-link]", tile).setAttribute("href", "/jobs/" + job.id);
      });
      // Until no job is active and no run is left running, and one more look after that.
      if (active || $all("[data-live-run]").length) { gridLastLook = false; return true; }
      if (gridLastLook) { return false; }
      gridLastLook = true;
      return true;
    }, 700);
  }

  // A run page's counters and images while the run is running: one request answers both
  // (GET /api/v1/runs/<id>/jobs counts the run in the same statement), so they agree.
  var runJobs = $("[data-run-jobs]");
  var runLive = $(".run-progress[data-live-run]");
  if (runJobs && runLive) {
    var lastLook = false;
    poll(runJobs.getAttribute("data-run-jobs"), function (page) {
      if (page.run && runLive.hasAttribute("data-live-run")) { showRun(runLive, page.run); }
      page.items.forEach(function (job) {
        var row = $("[data-job-id=\"" + job.id + "\"]", runJobs);
        if (!row) { return; }
        row.setAttribute("data-status", job.status);
        jobBadge($("[data-badge]", row), job.status, job.progress);
        var recolor = job.result && job.result.outputs && job.result.outputs.recolor;
        if (recolor) { showThumb($("[data-thumb]", row), recolor); }
      });
      if (runLive.hasAttribute("data-live-run")) { return true; }
      if (lastLook) { return false; }
      lastLook = true;
      return true;
    }, 700);
  }

  // "Use mine": the browser's own time zone for a schedule.
  var zoneButton = $("[data-use-my-timezone]");
  if (zoneButton && window.Intl && Intl.DateTimeFormat) {
    var mine = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var zoneInput = $("#timezone");
    if (mine && zoneInput && zoneInput.value !== mine) {
      zoneButton.textContent = "Use mine (" + mine + ")";
      zoneButton.hidden = false;
      zoneButton.addEventListener("click", function () {
        zoneInput.value = mine;
        zoneButton.hidden = true;
        zoneInput.focus();
      });
    }
  }

  // Forms that delete something ask first.
  // Copy buttons (the account page's new token and curl line): the clipboard, or the text
  // selected for Ctrl-C where the clipboard is not offered.
  $all("[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = $("[data-copy-status]");
    var said = function (text) {
      button.textContent = text;
      if (status) { status.textContent = text; }
      window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
    };
    button.addEventListener("click", function () {
      if (!field) { return; }
      field.focus();
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { said("Copied"); },
          function () { said("Press Ctrl-C to copy"); });
      } else {
        said(document.execCommand && document.execCommand("copy") ? "Copied" : "Press Ctrl-C to copy");
      }
    });
  });

  // Palette swatches: a click copies the colour's hex and says so in place for 1.5 s.
  $all("[data-copy-text]").forEach(function (button) {
    var label = button.innerHTML;
    var said = function (text) {
      button.textContent = text;
      window.setTimeout(function () { button.innerHTML = label; }, 1500);
    };
    button.addEventListener("click", function () {
      var text = button.getAttribute("data-copy-text");
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { said("Copied"); },
          function () { said(text); });
      } else {
        said(text);  // no clipboard here (plain http off localhost): show it to copy by hand
      }
    });
  });

  $all("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
