// The campaign report's timeline chart: opens and clicks (all, and human only) over time.
// The series come from the page's json_script element (#campaign-timeline), written by the
// server from the campaign's hourly counters; nothing is fetched.
(function () {
  const source = document.getElementById("campaign-timeline");
  const canvas = document.getElementById("campaign-timeline-chart");
  if (!source || !canvas || typeof window.Chart === "undefined") return;
  const timeline = JSON.parse(source.textContent);
  if (!timeline.labels || !timeline.labels.length) return;
  // A line through one or two points draws nothing readable (a dot on an empty plane, or one
  // slope): up to BAR_POINTS hours are bars side by side; more are lines.
  const BAR_POINTS = 6;
  const bars = timeline.labels.length <= BAR_POINTS;
  const dataset = (label, data, color, dashed) => (bars
    ? { label, data, backgroundColor: color, borderColor: color, borderWidth: dashed ? 0 : 1,
        maxBarThickness: 36 }
    : {
        label,
        data,
        borderColor: color,
        backgroundColor: color,
        borderDash: dashed ? [6, 4] : [],
        borderWidth: 2,
        pointRadius: timeline.labels.length > 48 ? 0 : 2,
        cubicInterpolationMode: "monotone",  // no overshoot below zero between points
      });
  const peak = Math.max(0, ...timeline.opens, ...timeline.clicks);
  const chart = new window.Chart(canvas, {
    type: bars ? "bar" : "line",
    data: {
      labels: timeline.labels,
      datasets: [
        dataset("Opens", timeline.opens, "#417690", false),
        dataset("Human opens", timeline.human_opens, "#79aec8", true),
        dataset("Clicks", timeline.clicks, "#c4841d", false),
        dataset("Human clicks", timeline.human_clicks, "#e0b15e", true),
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
        // Whole numbers from zero, with headroom: 3 opens do not fill the plot to its top.
        y: { beginAtZero: true, suggestedMax: Math.max(5, Math.ceil(peak * 1.1)),
             ticks: { precision: 0 } },
      },
      plugins: { legend: { position: "bottom" } },
    },
  });
  canvas.dataset.kind = bars ? "bar" : "line";  // read by the browser test
  canvas.dataset.points = String(chart.data.labels.length);  // read by the browser test
})();
