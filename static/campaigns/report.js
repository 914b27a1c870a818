// The campaign report's timeline chart: opens and clicks (all, and human only) over time.
// The series come from the page's json_script element (#campaign-timeline), written by the
// server from the campaign's hourly counters; nothing is fetched.
(function () {
  const source = document.getElementById("campaign-timeline");
  const canvas = document.getElementById("campaign-timeline-chart");
  if (!source || !canvas || typeof window.Chart === "undefined") return;
  const timeline = JSON.parse(source.textContent);
  if (!timeline.labels || !timeline.labels.length) return;
  const line = (label, data, color, dashed) => ({
    label,
    data,
    borderColor: color,
    backgroundColor: color,
    borderDash: dashed ? [6, 4] : [],
    borderWidth: 2,
    pointRadius: timeline.labels.length > 48 ? 0 : 2,
    cubicInterpolationMode: "monotone",  // no overshoot below zero between points
  });
  const chart = new window.Chart(canvas, {
    type: "line",
    data: {
      labels: timeline.labels,
      datasets: [
        line("Opens", timeline.opens, "#417690", false),
        line("Human opens", timeline.human_opens, "#79aec8", true),
        line("Clicks", timeline.clicks, "#c4841d", false),
        line("Human clicks", timeline.human_clicks, "#e0b15e", true),
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { position: "bottom" } },
    },
  });
  canvas.dataset.points = String(chart.data.labels.length);  // read by the browser test
})();
