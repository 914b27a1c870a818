// Live progress on the campaign page: polls the progress endpoint every 2 s while the
// campaign is scheduled or sending, and reloads the page once it reaches another status.
(function () {
  const panel = document.getElementById("campaign-panel");
  if (!panel) return;
  const live = new Set(["scheduled", "sending"]);
  if (!live.has(panel.dataset.status)) return;
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
    try {
      const response = await fetch(panel.dataset.progressUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      if (data.status !== panel.dataset.status) { window.location.reload(); return; }
      const processed = data.recipients - data.pending;
      const now = performance.now();
      if (previous && now > previous.at) {
        const rate = ((processed - previous.processed) * 1000) / (now - previous.at);
        set("rate", rate > 0
          ? ` · ${Math.round(rate).toLocaleString()} /s · about ${formatEta(data.pending / rate)} left`
          : "");
      }
      previous = { at: now, processed };
      set("done", data.sent);
      set("recipients", data.recipients);
      set("percent", data.progress_percent);
      const bar = panel.querySelector('[data-field="bar"]');
      if (bar) bar.style.width = `${data.progress_percent}%`;
    } finally {
      setTimeout(poll, 2000);
    }
  }
  setTimeout(poll, 2000);
})();
