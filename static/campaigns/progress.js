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
  async function poll() {
    try {
      const response = await fetch(panel.dataset.progressUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      if (data.status !== panel.dataset.status) { window.location.reload(); return; }
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
