// narro dashboard: live progress without reloading. Server-rendered rows are swapped in place
// when they change; a row whose audio is playing, or whose retry is being set up, waits.
"use strict";
(function () {
  function wait(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  async function pollCourse(table) {
    var url = table.dataset.rowsUrl, every = Number(table.dataset.pollMs) || 1500;
    var counts = document.getElementById("counts");
    var quietRounds = 0;
    while (true) {
      await wait(every);
      var busyNow = counts && counts.dataset.busy === "1";
      if (!busyNow && quietRounds > 2) { await wait(every * 3); }
      var text;
      try {
        var response = await fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
        if (!response.ok) { continue; }
        text = await response.text();
      } catch (e) { continue; }
      var doc = new DOMParser().parseFromString(text, "text/html");
      doc.querySelectorAll("#rows > tr").forEach(function (fresh) {
        var old = document.getElementById(fresh.id);
        if (!old || old.dataset.version === fresh.dataset.version) { return; }
        var audio = old.querySelector("audio");
        if (audio && !audio.paused) { return; }
        // Someone is choosing a voice or tier for this row's retry: leave it until they are done.
        var override = old.querySelector("details.override[open], details.flag[open]");
        if (override || old.contains(document.activeElement)) { return; }
        var details = old.querySelector("details");
        var open = details && details.open;
        var node = document.importNode(fresh, true);
        old.replaceWith(node);
        if (open && node.querySelector("details")) { node.querySelector("details").open = true; }
      });
      var live = doc.getElementById("live-counts");
      if (live && counts) {
        if (counts.innerHTML.trim() !== live.innerHTML.trim()) { counts.innerHTML = live.innerHTML; }
        counts.dataset.busy = live.dataset.busy;
        quietRounds = live.dataset.busy === "1" ? 0 : quietRounds + 1;
      }
    }
  }

  async function pollClip(state) {
    var every = Number(state.dataset.pollMs) || 1500;
    while (true) {
      await wait(state.dataset.busy === "1" ? every : every * 4);
      try {
        var response = await fetch(state.dataset.stateUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
        if (!response.ok) { continue; }
        var data = await response.json();
        if (data.version !== state.dataset.version) {
          var audio = document.querySelector("audio");
          if (audio && !audio.paused) { continue; }
          window.location.replace(window.location.pathname);
          return;
        }
      } catch (e) { /* try again next round */ }
    }
  }

  // Captions under the player: a cue's time plays from there, and the cue being spoken is marked.
  function followCaptions(list) {
    var audio = document.querySelector("audio");
    if (!audio) { return; }
    var items = Array.prototype.slice.call(list.querySelectorAll("li"));
    list.addEventListener("click", function (event) {
      var button = event.target.closest("button.cue-time");
      if (!button) { return; }
      audio.currentTime = Number(button.parentElement.dataset.start);
      audio.play().catch(function () {});
    });
    audio.addEventListener("timeupdate", function () {
      var now = audio.currentTime;
      items.forEach(function (item) {
        var on = now >= Number(item.dataset.start) && now < Number(item.dataset.end);
        item.classList.toggle("current", on);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var captions = document.querySelector("ol.captions");
    if (captions) { followCaptions(captions); }
    var table = document.querySelector("table.clips[data-rows-url]");
    if (table) { pollCourse(table); }
    var state = document.getElementById("clip-state");
    if (state) { pollClip(state); }
  });
})();
