// The page of `gsrcl serve`: upload, verify, annotate, results. Plain JavaScript, no build step; every value from
// the server is put on the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_PATH_ERRORS = new Set([66, 67, 68, 69, 70, 71, 72, 73, 74, 80]);
const state = { job: null, refs: [], poll: null, sort: "barcode", order: "asc", offset: 0, limit: 50 };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) { $("login").hidden = false; }
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return body;
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

function mb(bytes) { return `${(bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0)} MB`; }

// --- references ---------------------------------------------------------------------------------------------
async function loadReferences() {
  state.refs = await api("/api/references");
  const select = $("reference");
  select.textContent = "";
  for (const r of state.refs) {
    const option = el("option", r.error ? `${r.name} (not usable)` : `${r.name} (${r.method})`);
    option.value = r.name;
    option.disabled = Boolean(r.error);
    select.appendChild(option);
  }
  const usable = state.refs.find((r) => !r.error);
  if (usable) select.value = usable.name;
  showReference();
}

function showReference() {
  const r = state.refs.find((x) => x.name === $("reference").value);
  $("reference-info").textContent = r ? (r.error ? r.error :
    `${r.method}, ${r.cell_types.length} cell types (${r.cell_types.join(", ")}), ${r.n_genes} genes`) : "";
}

// --- upload -------------------------------------------------------------------------------------------------
function upload() {
  const file = $("file").files[0];
  if (!file) { showError("choose a query file first"); return; }
  showError("");
  resetJob();
  const form = new FormData();
  form.append("reference", $("reference").value);
  form.append("p", $("p").value || "0.5");
  form.append("run", "0");
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      bar.value = (100 * e.loaded) / e.total;
      $("upload-text").textContent = `uploading: ${mb(e.loaded)} of ${mb(e.total)}`;
    }
  };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    if (xhr.status === 201 && body) {
      bar.value = 100;
      $("upload-text").textContent = `uploaded ${body.upload_name} (${mb(body.size)})`;
      setJob(body);
    } else {
      if (xhr.status === 401) $("login").hidden = false;
      $("upload-text").textContent = "upload refused";
      showError((body && body.error) || `upload failed (${xhr.status})`);
    }
  };
  xhr.onerror = () => { $("upload-text").textContent = ""; showError("the upload failed: the server did not answer"); };
  xhr.send(form);
}

function resetJob() {
  if (state.poll) clearTimeout(state.poll);
  state.job = null;
  for (const id of ["step-verify", "step-run", "results", "keys-form", "verify-report", "messages"]) $(id).hidden = true;
}

// --- a job --------------------------------------------------------------------------------------------------
function setJob(job) {
  state.job = job;
  render(job);
  if (job.state === "queued" || job.state === "running") {
    if (state.poll) clearTimeout(state.poll);
    state.poll = setTimeout(poll, 400);
  }
}

async function poll() {
  if (!state.job) return;
  try {
    setJob(await api(`/api/jobs/${state.job.id}`));
  } catch (e) {
    showError(e.message);
  }
}

function render(job) {
  $("step-verify").hidden = false;
  const busy = job.state === "queued" || job.state === "running";
  const verifying = job.phase === "verify";
  $("verify-status").textContent = busy && verifying ? `verifying ${job.upload_name}: ${job.stage}` :
    (job.verify ? `${job.upload_name} verified for reference ${job.verify.reference}` : "");
  renderReport(job.verify);
  const failed = job.state === "failed" || job.state === "interrupted";
  showError(failed ? job.error : "");
  const messages = (job.messages || []).filter((m) => m.trim());
  $("messages").textContent = messages.join("\n");
  $("messages").hidden = !(messages.length && (failed || job.state === "done"));
  const wantKeys = failed && verifying && KEY_PATH_ERRORS.has(job.exit_code);
  $("keys-form").hidden = !wantKeys;
  if (wantKeys) {
    $("tree").textContent = job.detail || "";
    const params = job.params || {};
    for (const k of ["mat", "obs", "var"]) if (params[k] && !$(k).value) $(k).value = params[k].join(" ");
  }
  const ready = Boolean(job.verify);
  $("step-run").hidden = !ready;
  $("start").disabled = busy || job.state === "done";
  $("job-progress").value = job.phase === "predict" || job.state === "done" ? job.progress : 0;
  $("stage").textContent = job.phase === "predict" || job.state === "done" ?
    `${job.state === job.stage ? job.state : `${job.state}: ${job.stage}`} (${Math.round(job.progress)}%)` : "";
  if (job.state === "done") renderResults(job);
  if (job.state !== state.shownState) { state.shownState = job.state; loadJobs(); }
}

function renderReport(report) {
  const dl = $("verify-report");
  dl.textContent = "";
  dl.hidden = !report;
  if (!report) return;
  const pct = (a, b) => (b ? (100 * a / b).toFixed(1) : "0.0");
  const rows = [
    ["Cells", report.n_cells.toLocaleString()],
    ["Genes", report.n_genes.toLocaleString()],
    ["Query genes matched", `${report.n_query_genes_matched.toLocaleString()} of ${report.n_genes.toLocaleString()} ` +
      `(${pct(report.n_query_genes_matched, report.n_genes)}%)`],
    ["Reference genes matched", `${report.n_reference_genes_matched.toLocaleString()} of ` +
      `${report.n_reference_genes.toLocaleString()} (${pct(report.n_reference_genes_matched, report.n_reference_genes)}%)`],
    ["Values", report.values],
    ["Prediction will", report.values_message],
    ["Format", report.format],
  ];
  for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
}

async function reverify(event) {
  event.preventDefault();
  if (!state.job) return;
  const body = { reference: $("reference").value, mat: $("mat").value, obs: $("obs").value, var: $("var").value,
                 transpose: $("transpose").checked };
  try {
    setJob(await api(`/api/jobs/${state.job.id}/verify`, { method: "POST", body: JSON.stringify(body),
                                                            headers: { "Content-Type": "application/json" } }));
  } catch (e) { showError(e.message); }
}

async function start() {
  if (!state.job) return;
  const body = { reference: $("reference").value, p: $("p").value };
  try {
    setJob(await api(`/api/jobs/${state.job.id}/start`, { method: "POST", body: JSON.stringify(body),
                                                           headers: { "Content-Type": "application/json" } }));
  } catch (e) { showError(e.message); }
}

async function referenceChanged() {
  showReference();
  const job = state.job;
  if (job && job.state !== "queued" && job.state !== "running" && job.state !== "done") {
    await reverify(new Event("submit"));
  }
}

// --- results ------------------------------------------------------------------------------------------------
function renderResults(job) {
  const section = $("results");
  if (!section.hidden && section.dataset.job === job.id) return;
  section.dataset.job = job.id;
  section.hidden = false;
  const result = job.result;
  const tbody = $("counts").querySelector("tbody");
  tbody.textContent = "";
  const filter = $("label-filter");
  filter.textContent = "";
  filter.appendChild(el("option", "all"));
  filter.firstChild.value = "";
  for (const [label, n] of Object.entries(result.counts)) {
    const tr = el("tr");
    tr.appendChild(el("td", label));
    tr.appendChild(el("td", n.toLocaleString(), "num"));
    tr.appendChild(el("td", (100 * n / Math.max(result.n_cells, 1)).toFixed(1), "num"));
    tbody.appendChild(tr);
    if (n) { const o = el("option", label); o.value = label; filter.appendChild(o); }
  }
  const base = `/api/jobs/${job.id}/files/`;
  $("tsne").src = result.files.includes("tsne.svg") ? `${base}tsne.svg?inline=true` : "";
  const list = $("downloads");
  list.textContent = "";
  for (const name of result.files) {
    const a = el("a", name);
    a.href = base + name;
    a.setAttribute("download", name);
    a.dataset.file = name;
    const li = el("li");
    li.appendChild(a);
    list.appendChild(li);
  }
  state.offset = 0;
  loadCells();
}

async function loadCells() {
  if (!state.job) return;
  const q = new URLSearchParams({ offset: state.offset, limit: state.limit, sort: state.sort, order: state.order });
  if ($("label-filter").value) q.set("label", $("label-filter").value);
  let page;
  try { page = await api(`/api/jobs/${state.job.id}/cells?${q}`); } catch (e) { showError(e.message); return; }
  const tbody = $("cells").querySelector("tbody");
  tbody.textContent = "";
  const fmt = (v) => (v === null || v === undefined ? "" : Number(v).toFixed(4));
  for (const row of page.rows) {
    const tr = el("tr");
    tr.appendChild(el("td", row.barcode));
    tr.appendChild(el("td", row.predicted_labels));
    tr.appendChild(el("td", fmt(row.conf_score), "num"));
    tr.appendChild(el("td", fmt(row.unseen_score), "num"));
    tbody.appendChild(tr);
  }
  const last = Math.min(page.offset + page.limit, page.total);
  $("page-info").textContent = page.total ? `cells ${page.offset + 1}-${last} of ${page.total}` : "no cells";
  $("prev").disabled = page.offset === 0;
  $("next").disabled = last >= page.total;
  for (const th of $("cells").querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && state.order === "asc");
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.order === "desc");
  }
}

function sortBy(column) {
  if (state.sort === column) state.order = state.order === "asc" ? "desc" : "asc";
  else { state.sort = column; state.order = column === "barcode" || column === "predicted_labels" ? "asc" : "desc"; }
  state.offset = 0;
  loadCells();
}

// --- recent jobs --------------------------------------------------------------------------------------------
let jobsLoading = false;
async function loadJobs() {
  if (jobsLoading) return;
  jobsLoading = true;
  try {
    const jobs = await api("/api/jobs");
    const tbody = $("jobs").querySelector("tbody");
    tbody.textContent = "";
    for (const job of jobs.slice(0, 20)) {
      const tr = el("tr");
      const a = el("a", job.upload_name);
      a.href = `#${job.id}`;
      a.addEventListener("click", (e) => { e.preventDefault(); openJob(job.id); });
      const td = el("td");
      td.appendChild(a);
      tr.appendChild(td);
      tr.appendChild(el("td", job.state));
      tr.appendChild(el("td", job.params.reference));
      tr.appendChild(el("td", new Date(job.created * 1000).toLocaleString()));
      tbody.appendChild(tr);
    }
  } catch (e) { /* the list is a convenience */ } finally { jobsLoading = false; }
}

async function openJob(id) {
  resetJob();
  try {
    const job = await api(`/api/jobs/${id}`);
    if (state.refs.some((r) => r.name === job.params.reference)) $("reference").value = job.params.reference;
    $("p").value = job.params.p;
    setJob(job);
  } catch (e) { showError(e.message); }
}

// --- start --------------------------------------------------------------------------------------------------
async function init() {
  const config = await api("/api/config");
  $("version").textContent = `gsrcl ${config.version}`;
  $("max-upload").textContent = mb(config.max_upload_bytes);
  try {
    await loadReferences();
    $("login").hidden = true;
    loadJobs();
    if (location.hash.length === 33) openJob(location.hash.slice(1));
  } catch (e) {
    if (e.status !== 401) showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("upload").addEventListener("click", upload);
  $("reference").addEventListener("change", referenceChanged);
  $("keys-form").addEventListener("submit", reverify);
  $("start").addEventListener("click", start);
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadCells(); });
  $("next").addEventListener("click", () => { state.offset += state.limit; loadCells(); });
  $("label-filter").addEventListener("change", () => { state.offset = 0; loadCells(); });
  for (const th of $("cells").querySelectorAll("th[data-sort]")) th.addEventListener("click", () => sortBy(th.dataset.sort));
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/api/login", { method: "POST", body: JSON.stringify({ token: $("token").value }),
                                headers: { "Content-Type": "application/json" } });
      showError("");
      await init();
    } catch (e) { showError(e.message); }
  });
  init();
});
