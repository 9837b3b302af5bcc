// Logs in from a one-time link. The link carries its code after the "#", which a browser
// sends to no server, so no proxy's access log keeps it: this page moves it into its
// form, takes it out of the address bar and the tab's history, and sends the form, whose
// POST spends it. It sends it by itself only when the server saw the link opened from no
// other site (typed, pasted, or opened by `sy ui`): a link another site sent the browser
// to waits for a click, or that site could log its visitor in as the link's client.
(function () {
  "use strict";
  var form = document.getElementById("login");
  if (!form) {
    return;
  }
  var field = form.elements.namedItem("code");
  var m = /^#code=([^&]*)/.exec(window.location.hash);
  if (m) {
    try {
      field.value = decodeURIComponent(m[1]);
    } catch (e) {
      field.value = "";
    }
    window.history.replaceState(null, "", window.location.pathname);
  }
  if (field.value && form.hasAttribute("data-auto")) {
    form.submit();
  }
})();
