// Live progress on the campaign page: polls the progress endpoint every 2 s for as long as the
// campaign can still change (scheduled, starting, sending, and paused too: rows already handed
// out finish after a pause, and another tab may resume it), and stops once it is final (sent,
// cancelled, failed). A change of status reloads the page, for its buttons.
(function () {
  const panel = document.getElementById("campaign-panel");
  if (!panel) return;
  if (panel.dataset.status === "draft" || "final" in panel.dataset) return;
  const number = (value) => Number(value).toLocaleString("en");
  const set = (name, value) => {
    const el = panel.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = value;
  };
  // Rate and ETA from the last two polls: processed = recipients - pending.
  let previous = null;
  const formatEta = (seconds) => {
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  };
  async function poll() {
    let final = false;
    try {
      const response = await fetch(panel.dataset.progressUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      if (data.status !== panel.dataset.status) { window.location.reload(); return; }
      final = data.final;
      const processed = data.recipients - data.pending;
      const now = performance.now();
      if (previous && now > previous.at) {
        const rate = ((processed - previous.processed) * 1000) / (now - previous.at);
        set("rate", rate > 0 && data.status === "sending"
          ? ` · ${Math.round(rate).toLocaleString("en")} /s · about ${formatEta(data.pending / rate)} left`
          : "");
      }
      previous = { at: now, processed };
      set("status", data.status_label);
      set("done", number(data.sent));
      set("recipients", number(data.recipients));
      set("percent", data.progress_percent);
      set("summary", data.summary);
      const bar = panel.querySelector('[data-field="bar"]');
      if (bar) bar.style.width = `${data.progress_percent}%`;
      const progressbar = panel.querySelector('[data-field="progressbar"]');
      if (progressbar) progressbar.setAttribute("aria-valuenow", data.progress_percent);
      panel.dataset.polls = String(Number(panel.dataset.polls || 0) + 1);  // read by tests
    } finally {
      if (!final) setTimeout(poll, 2000);
    }
  }
  setTimeout(poll, 2000);
})();
