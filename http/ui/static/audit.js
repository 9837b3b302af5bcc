// Follows the audit trail: once the page shows the stream's end, it asks the server every
// two seconds for the events after the last one read and adds those that pass the page's
// filters to the table. Text goes in with textContent only, never as HTML.
(function () {
  "use strict";
  var follow = document.getElementById("follow");
  var body = document.querySelector("#events tbody");
  if (!follow || !body) {
    return;
  }
  var url = new URL(follow.getAttribute("data-poll"), window.location.href);
  var leases = url.pathname.replace(/\/audit\/events$/, "/leases/");
  var keep = 1000; // rows kept on the page, the oldest dropped first

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function add(e) {
    var row = document.createElement("tr");
    row.setAttribute("data-seq", String(e.seq));
    if (e.failed) {
      row.className = "bad";
    }
    cell(row, String(e.seq)).className = "num";
    cell(row, e.time);
    cell(row, e.type).className = "type";
    cell(row, e.actor);
    cell(row, e.target);
    var td = cell(row, "");
    if (e.lease_id) {
      var a = document.createElement("a");
      a.href = leases + encodeURIComponent(e.lease_id);
      a.title = e.lease_id;
      a.textContent = e.lease_id.slice(-8);
      td.appendChild(a);
    }
    cell(row, e.details);
    body.appendChild(row);
    while (body.rows.length > keep) {
      body.deleteRow(0);
    }
  }

  function poll() {
    fetch(url.toString(), { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        return resp.json().then(function (answer) {
          if (!resp.ok) {
            throw new Error(answer.message || resp.statusText);
          }
          return answer;
        });
      })
      .then(function (answer) {
        answer.events.forEach(add);
        url.searchParams.set("cursor", answer.cursor);
        follow.textContent = "Following: new events appear below as they happen.";
        window.setTimeout(poll, answer.more ? 0 : 2000);
      })
      .catch(function (err) {
        follow.textContent = "Not following (" + err.message + "); retrying in 10 s.";
        window.setTimeout(poll, 10000);
      });
  }
  window.setTimeout(poll, 2000);
})();
