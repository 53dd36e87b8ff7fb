// Live job progress: re-reads /ui/jobs.json every two seconds and redraws the job table (no library).
(function () {
  const table = document.getElementById("job-table");
  if (!table) return;
  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
  async function poll() {
    try {
      const answer = await fetch(table.dataset.poll, { credentials: "same-origin" });
      if (!answer.ok) return;
      const jobs = await answer.json();
      const rows = jobs.map(function (job) {
        const tr = document.createElement("tr");
        tr.dataset.job = job.id;
        const bar = document.createElement("progress");
        bar.max = 1; bar.value = job.progress;
        const state = cell(job.state); state.className = "state";
        const message = cell(job.message); message.className = "message";
        const progress = document.createElement("td"); progress.appendChild(bar);
        tr.append(cell(job.id), cell(job.kind), state, progress, message);
        return tr;
      });
      const header = table.rows[0];
      table.replaceChildren(header, ...rows);
    } catch (error) { /* the next poll tries again */ }
  }
  setInterval(poll, 2000);
})();
