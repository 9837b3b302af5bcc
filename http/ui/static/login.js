// Logs in from a one-time link. The link carries its code after the "#", which a browser
// sends to no server, proxy or link previewer: only this page, once opened, moves it into
// its form, takes it out of the address bar and the history, and sends the form, whose
// POST spends it. Without a script the form's button does the same for a link that gives
// its code in the query instead.
(function () {
  "use strict";
  var form = document.getElementById("login");
  if (!form) {
    return;
  }
  var field = form.elements.namedItem("code");
  var m = /^#code=([^&]*)/.exec(window.location.hash);
  if (m) {
    field.value = decodeURIComponent(m[1]);
    window.history.replaceState(null, "", window.location.pathname);
  }
  if (field.value) {
    form.submit();
  }
})();
