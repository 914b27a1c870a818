// The new API key's page: "Copy" puts the key on the clipboard (or, where the browser keeps
// the clipboard from the page, selects it for the user to copy).
(function () {
  const field = document.getElementById("apikey-secret");
  const button = document.getElementById("apikey-copy");
  if (!field || !button) return;
  field.addEventListener("focus", () => field.select());
  button.addEventListener("click", async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (err) {
      if (!document.execCommand("copy")) return; // left selected: Ctrl+C
    }
    button.textContent = button.dataset.copied;
  });
})();
