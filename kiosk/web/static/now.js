// The Now page's live part: fetched again every few seconds and put in place, without a
// full reload.  Without JavaScript the page is the same, only still.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) { return; }
  var src = live.getAttribute("data-src");
  var every = parseInt(live.getAttribute("data-every"), 10) || 5000;
  var note = document.createElement("p");
  note.className = "small paused";
  note.setAttribute("role", "status");
  live.parentNode.insertBefore(note, live.nextSibling);
  function tick() {
    fetch(src, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("the dashboard answered " + r.status); }
        return r.text();
      })
      .then(function (html) { live.innerHTML = html; note.textContent = ""; })
      .catch(function (e) {
        note.textContent = "Live updates paused (" + e.message + "); retrying.";
      })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
}());
