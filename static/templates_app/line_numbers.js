// Line numbers beside the template editor's text areas (textarea.line-numbered), so a line
// named in an error ("Line 12: …") can be found. The text area does not wrap its lines
// (wrap="off"): each number then sits beside exactly one line of the source.
(function () {
  "use strict";

  function numbers(count) {
    var lines = [];
    for (var i = 1; i <= count; i++) lines.push(i);
    return lines.join("\n");
  }

  function attach(textarea) {
    var editor = document.createElement("div");
    editor.className = "line-numbered-editor";
    var gutter = document.createElement("pre");
    gutter.className = "line-numbers";
    gutter.setAttribute("aria-hidden", "true");
    textarea.parentNode.insertBefore(editor, textarea);
    editor.appendChild(gutter);
    editor.appendChild(textarea);

    var shown = -1;
    function update() {
      var count = textarea.value.split("\n").length;
      if (count !== shown) {
        // (A blank line at the end lets the gutter scroll as far as the text area does.)
        gutter.textContent = numbers(count) + "\n";
        shown = count;
      }
      gutter.scrollTop = textarea.scrollTop;
    }
    // The gutter is as tall as the text area (not as its own lines), so both scroll.
    function fit() {
      gutter.style.height = textarea.offsetHeight + "px";
    }
    if (window.ResizeObserver) new ResizeObserver(fit).observe(textarea);
    fit();
    textarea.addEventListener("input", update);
    textarea.addEventListener("scroll", function () {
      gutter.scrollTop = textarea.scrollTop;
    });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea.line-numbered").forEach(attach);
  });
})();
