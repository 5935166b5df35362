// The dashboard works without this file; it only says so when the service cannot be reached.
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
})();
