/* erp console: live regions and local times. No framework, no build step.
 *
 * An element with data-live="<url>" is fetched again every data-live-every seconds while the
 * tab is visible, with the ETag it holds (If-None-Match): the server answers 304 with no body
 * when nothing changed, else the region's new HTML (rendered and escaped by the server). One
 * without an ETag (data-etag="") is fetched at once: the page left it to be read on its own.
 * <time class="viewer" datetime="..."> shows the moment in the viewer's own time zone.
 * A form with data-confirm asks before it is sent.
 * Keys (outside form fields): "/" finds the search field; "g" then o, s, r, l, a or w goes to the
 * overview, schedules, runs, load, alerts or work.
 */
(function () {
  "use strict";

  function viewerTimes(root) {
    root.querySelectorAll("time.viewer[datetime]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        element.textContent = "your time: " + moment.toLocaleString();
      }
    });
  }

  function live(region) {
    var url = region.getAttribute("data-live");
    var every = Math.max(2, parseInt(region.getAttribute("data-live-every"), 10) || 5) * 1000;
    var etag = region.getAttribute("data-etag");
    var busy = false;

    function refresh() {
      if (busy || document.visibilityState !== "visible") {
        return;
      }
      if (region.contains(document.activeElement) || region.querySelector("input:checked")) {
        return; /* someone is using what is in it (focus, ticked boxes): not replaced under their hands */
      }
      busy = true;
      var headers = { "X-Console-Live": "1" };
      if (etag) {
        headers["If-None-Match"] = etag;
      }
      fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload(); /* the session ended: the page sends you to sign in */
            return null;
          }
          if (response.status !== 200) {
            return null;
          }
          etag = response.headers.get("ETag");
          return response.text().then(function (html) {
            region.innerHTML = html;
            region.setAttribute("data-etag", etag || "");
            region.setAttribute("data-updated", String(Date.now()));
            viewerTimes(region);
          });
        })
        .catch(function () { /* offline for a moment: the next round tries again */ })
        .then(function () { busy = false; });
    }

    window.setInterval(refresh, every);
    document.addEventListener("visibilitychange", refresh);
    if (!etag) {
      refresh(); /* a region the page left to be read on its own (the health strip): now */
    }
  }

  /* A region with data-preview-form="<form id>" shows what that form would make: asked for
     again (its fields as the query, never its token) a moment after each change. */
  function preview(region) {
    var form = document.getElementById(region.getAttribute("data-preview-form"));
    var url = region.getAttribute("data-live");
    var timer = null;
    if (!form) {
      return;
    }
    function refresh() {
      var fields = new URLSearchParams(new FormData(form));
      fields.delete("csrf");
      fetch(url + "?" + fields.toString(), { headers: { "X-Console-Live": "1" }, cache: "no-store", credentials: "same-origin" })
        .then(function (response) { return response.status === 200 ? response.text() : null; })
        .then(function (html) {
          if (html !== null) {
            region.innerHTML = html;
          }
        })
        .catch(function () { /* the next change tries again */ });
    }
    form.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 300);
    });
  }

  /* <select data-kind-switch> shows only the fieldset[data-kind] of the chosen kind. */
  function kindSwitch(select) {
    var form = select.form;
    function show() {
      form.querySelectorAll("fieldset[data-kind]").forEach(function (fieldset) {
        fieldset.hidden = fieldset.getAttribute("data-kind") !== select.value;
      });
    }
    select.addEventListener("change", show);
    show();
  }

  var PAGES = { o: "/console", s: "/console/schedules", r: "/console/runs", l: "/console/load", a: "/console/alerts", w: "/console/work" };
  var leader = false;

  function shortcut(event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || target.isContentEditable ||
        /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(target.tagName)) {
      return;
    }
    if (leader) {
      leader = false;
      if (PAGES[event.key]) {
        window.location.href = PAGES[event.key];
      }
    } else if (event.key === "g") {
      leader = true;
      window.setTimeout(function () { leader = false; }, 1500);
    } else if (event.key === "/") {
      var search = document.querySelector("main input[type=search], main input[type=text]");
      if (search) {
        event.preventDefault();
        search.focus();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("keydown", shortcut);
    viewerTimes(document);
    document.querySelectorAll("[data-live]:not([data-preview-form])").forEach(live);
    document.querySelectorAll("[data-preview-form]").forEach(preview);
    document.querySelectorAll("select[data-kind-switch]").forEach(kindSwitch);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  });
})();
