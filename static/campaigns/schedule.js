// The schedule form's one-click "Use my browser's zone": shown only when the browser's zone
// differs from the one selected and is one the server knows.
(function () {
  const select = document.getElementById("schedule_time_zone");
  const button = document.getElementById("schedule-browser-zone");
  if (!select || !button) return;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const known = Array.from(select.options).some((option) => option.value === zone);
  if (!zone || !known || select.value === zone) return;
  button.querySelector("span").textContent = zone;
  button.hidden = false;
  button.addEventListener("click", () => {
    select.value = zone;
    button.hidden = true;
  });
})();
