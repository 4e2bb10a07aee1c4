// Live parts of the dashboard: an element with data-live="URL" takes its content from URL every
// two seconds, unless the page is hidden, live updates are paused, or the keyboard focus is in it
// (a refresh must not pull the focus from under the keyboard).
(() => {
  "use strict";
  const INTERVAL_MS = 2000;
  let paused = false;
  const toggle = document.querySelector("[data-live-toggle]");
  if (toggle) {
    toggle.addEventListener("click", () => {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    });
  }
  async function refresh(element) {
    if (paused || document.hidden || element.contains(document.activeElement)) return;
    try {
      const response = await fetch(element.dataset.live, { credentials: "same-origin" });
      if (response.ok) element.innerHTML = await response.text();
    } catch (error) {
      // the local system stopped or restarts: try again at the next tick
    }
  }
  setInterval(() => document.querySelectorAll("[data-live]").forEach(refresh), INTERVAL_MS);
})();
