// The review page's link check: polls the results every 1.5 s until no link is still being
// checked, then lists each link with what it answered. Text only (textContent): URLs come
// from the marketer's template.
(function () {
  const box = document.getElementById("review-links");
  if (!box) return;
  const state = box.querySelector(".review-links-state");
  const list = box.querySelector(".review-links-list");
  async function poll() {
    let data;
    try {
      const response = await fetch(box.dataset.url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      data = await response.json();
    } catch (err) {
      state.textContent = "The links could not be checked just now.";
      return;
    }
    list.replaceChildren();
    let broken = 0;
    for (const link of data.links) {
      const item = document.createElement("li");
      item.dataset.state = link.key;
      const url = document.createElement("code");
      url.textContent = link.url;
      let words = link.state;
      if (link.key === "broken") { broken += 1; words = `broken (answers ${link.status})`; }
      else if (link.key === "ok") words = "works";
      else if (link.key === "unreachable") words = "could not check (no answer in time)";
      item.append(url, ` — ${words}`);
      if (link.key === "broken") item.className = "review-warning";
      list.append(item);
    }
    if (data.checking) {
      state.textContent = "Checking links…";
      setTimeout(poll, 1500);
    } else {
      state.textContent = broken
        ? `${broken} link${broken === 1 ? "" : "s"} answer with an error.`
        : "No link answered with an error.";
    }
  }
  poll();
})();
