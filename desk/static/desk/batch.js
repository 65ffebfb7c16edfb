// The batch page follows its bindings: it asks the desk for their state every two seconds (ten while they
// only wait for a supervisor) until all have finished, and updates the rows and the progress bar in place
// (no reload).
(function () {
  "use strict";
  const page = document.querySelector(".batch[data-status-url]");
  if (!page) return;
  const url = page.dataset.statusUrl;
  const buckets = ["bound", "failed", "waiting", "queued"];

  function show(state) {
    let x = 0;
    for (const bucket of buckets) {
      const count = state.counts[bucket];
      document.getElementById("count-" + bucket).textContent = count;
      const width = state.total ? (1000 * count) / state.total : 0;
      const bar = document.getElementById("bar-" + bucket);
      bar.setAttribute("x", x);
      bar.setAttribute("width", width);
      x += width;
    }
    for (const row of state.rows) {
      const tr = document.getElementById("row-" + row.id);
      if (!tr) continue;
      tr.dataset.status = row.status;
      tr.querySelector(".status").textContent = row.label;
      tr.querySelector(".note").textContent = row.note;
      tr.querySelector(".retry").hidden = row.status !== "failed";
    }
    const all = state.counts.bound === state.total;
    document.getElementById("batch-state").textContent = state.finished
      ? (all ? "All bound." : "Finished.")
      : state.waiting_only
        ? "Waiting for a supervisor: this page follows them by itself."
        : "Binding: this page follows them by itself.";
    page.dataset.finished = state.finished ? "true" : "false";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((state) => {
        show(state);
        // A supervisor's decision can take a while: asked every ten seconds meanwhile.
        if (!state.finished) window.setTimeout(poll, state.waiting_only ? 10000 : 2000);
      })
      .catch(() => window.setTimeout(poll, 5000));
  }

  poll();
})();
