// The dashboard works without this file; it says when the service cannot be reached, and wires
// the Dismiss and Close buttons.
(function () {
  "use strict";
  function notice(text) {
    var box = document.getElementById("notices");
    if (!box) return;
    var alert = document.createElement("div");
    alert.className = "alert alert-error";
    alert.setAttribute("role", "alert");
    var p = document.createElement("p");
    p.textContent = text; // text, never HTML
    alert.appendChild(p);
    box.replaceChildren(alert);
  }
  document.addEventListener("htmx:sendError", function () {
    notice("The inference service did not answer. Check that it is running, then try again.");
  });
  document.addEventListener("htmx:timeout", function () {
    notice("The inference service took too long to answer. Try again.");
  });
  // Dismiss a notice, close an Infer panel: here rather than in hx-on attributes, which the
  // Content-Security-Policy (script-src 'self', no eval) would block.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-dismiss], [data-close-panel]");
    if (!button) return;
    if (button.hasAttribute("data-dismiss")) {
      if (button.parentElement) button.parentElement.remove();
    } else {
      var cell = button.closest("td");
      if (cell) cell.replaceChildren();
    }
  });
})();
