// The review page: one version's neighbors, a draft of edits kept here until "commit".
// Every text from the store goes into the DOM through textContent or a value, never as HTML.
"use strict";

const KINDS = ["human", "synonym", "acoustic", "subtype", "paraphrase", "other"];
const TOKEN_KEY = "sept-review-token";

const S = {
  token: null,
  version: null,        // the version under review, as /api/version sends it
  latestAtLoad: null,
  rows: [],             // every record of the version plus added ones, each with its draft state
  byClass: new Map(),   // class -> rows, in rank order
  classIndex: 0,
  visibleClasses: [],   // classes that pass the filter, in version order
  sortKey: null, sortDir: 1,
  showRejected: false,
  filter: "",
  selected: new Set(),  // row uids
  cursor: null,         // row uid
  editing: null,        // row uid
  errors: new Map(),    // row uid -> message
  nextUid: 0,
  timing: {},
};

function $(id) { return document.getElementById(id); }
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- server --------------------------------------------------------------------------------

async function api(path, opts = {}) {
  const headers = Object.assign({ "X-Sept-Token": S.token }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  return { status: r.status, ok: r.ok, body };
}

function status(kind, text) {
  const s = $("status");
  s.className = kind || "";
  s.textContent = text || "";
}

// ---- draft ---------------------------------------------------------------------------------

function makeRow(rec, file, added) {
  return {
    uid: S.nextUid++, file, added: !!added, orig: rec,
    text: rec.text, status: rec.status || (file === "rejected" ? "rejected" : "accepted"),
    reason: rec.reason || null, kind: rec.kind || "human", removed: false,
  };
}

function rowChanged(r) {
  if (r.added || r.removed) return true;
  return r.text !== r.orig.text || r.status !== (r.orig.status || "accepted") ||
    (r.status === "rejected" && (r.reason || null) !== (r.orig.reason || null));
}

function loadVersion(v) {
  S.version = v;
  S.rows = []; S.byClass = new Map(); S.selected.clear(); S.errors.clear();
  S.cursor = null; S.editing = null;
  for (const c of v.classes) S.byClass.set(c, []);
  for (const rec of v.neighbors) addRow(makeRow(rec, "neighbors"));
  for (const rec of v.rejected) addRow(makeRow(rec, "rejected"));
  $("version-ref").textContent = v.ref;
  document.title = `sept review ${v.ref}`;
  buildHead();
}

function addRow(r) {
  S.rows.push(r);
  S.byClass.get(r.orig.class).push(r);
}

function currentClass() { return S.visibleClasses[S.classIndex]; }

// ---- rendering -----------------------------------------------------------------------------

function matches(text) { return !S.filter || text.toLowerCase().includes(S.filter); }

function classRowsShown(c) {
  const rows = S.byClass.get(c).filter(r => !r.removed && (S.showRejected || r.file === "neighbors"));
  const byName = matches(c);
  const shown = byName ? rows : rows.filter(r => matches(r.text));
  if (S.sortKey) {
    const k = S.sortKey, d = S.sortDir;
    const val = r => (k === "text" ? r.text.toLowerCase() : (r.orig.scores || {})[k]);
    shown.sort((a, b) => {
      const x = val(a), y = val(b);
      if (x === undefined && y === undefined) return 0;
      if (x === undefined) return 1;
      if (y === undefined) return -1;
      return x < y ? -d : x > y ? d : 0;
    });
  }
  return shown;
}

function renderClasses() {
  const ul = $("class-list");
  const keep = currentClass();
  S.visibleClasses = S.version.classes.filter(c => matches(c) || S.byClass.get(c).some(r => !r.removed && matches(r.text)));
  const i = S.visibleClasses.indexOf(keep);
  S.classIndex = i >= 0 ? i : Math.min(S.classIndex, Math.max(0, S.visibleClasses.length - 1));
  const frag = document.createDocumentFragment();
  S.visibleClasses.forEach((c, idx) => {
    const rows = S.byClass.get(c).filter(r => !r.removed);
    const acc = rows.filter(r => r.status === "accepted").length;
    const li = el("li", { class: (idx === S.classIndex ? "current" : "") + (S.byClass.get(c).some(rowChanged) ? " changed" : ""),
                          "data-class-index": String(idx), onclick: () => selectClass(idx) },
      el("span", { class: "cname", text: c }),
      el("span", { class: "counts", title: "accepted / rejected", text: `${acc} / ${rows.length - acc}` }));
    frag.append(li);
  });
  ul.replaceChildren(frag);
  const cur = ul.children[S.classIndex];
  if (cur) cur.scrollIntoView({ block: "nearest", inline: "nearest" });
  const changes = S.rows.filter(rowChanged).length;
  $("draft-count").textContent = changes ? `${changes} change(s) in draft` : "no changes";
}

function buildHead() {
  const cols = [["sel", ""], ["text", "text"], ["kind", "kind"], ["status", "status"]];
  for (const k of S.version.score_keys) cols.push([k, k]);
  cols.push(["source", "source"], ["reason", "reason"], ["actions", ""]);
  const tr = $("rows-head");
  tr.replaceChildren(...cols.map(([key, label]) => {
    const sortable = key === "text" || S.version.score_keys.includes(key);
    const th = el("th", { text: label, "data-key": key });
    if (sortable) {
      th.title = "sort";
      th.addEventListener("click", () => {
        if (S.sortKey === key) { if (S.sortDir === -1) { S.sortKey = null; S.sortDir = 1; } else S.sortDir = -1; }
        else { S.sortKey = key; S.sortDir = key === "text" ? 1 : -1; }
        renderRows();
      });
    }
    if (S.sortKey === key) th.className = S.sortDir > 0 ? "sorted-asc" : "sorted-desc";
    return th;
  }));
}

function sourceText(src) {
  if (!src) return "";
  const parts = [src.backend, src.model, src.prompt].filter(Boolean);
  if (src.sample !== undefined) parts.push(`sample ${src.sample}`);
  if (src.edited_from) parts.push(`edited from ${String(src.edited_from).slice(0, 8)}`);
  return parts.join(" · ");
}

function renderRows() {
  const c = currentClass();
  $("class-name").textContent = c === undefined ? "(no class matches the filter)" : c;
  buildHead();
  const body = $("rows-body");
  if (c === undefined) { body.replaceChildren(); return; }
  const rows = classRowsShown(c);
  if (S.cursor === null || !rows.some(r => r.uid === S.cursor)) S.cursor = rows.length ? rows[0].uid : null;
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    const classes = [r.status, r.file === "rejected" ? "was-rejected" : "", rowChanged(r) ? "changed" : "",
                     r.added ? "added" : "", r.uid === S.cursor ? "cursor" : "", S.errors.has(r.uid) ? "has-error" : ""];
    const tr = el("tr", { class: classes.join(" "), "data-uid": String(r.uid) });
    tr.addEventListener("click", ev => { if (ev.target.tagName !== "INPUT" && ev.target.tagName !== "BUTTON") setCursor(r.uid); });
    const cb = el("input", { type: "checkbox", class: "select" });
    cb.checked = S.selected.has(r.uid);
    cb.addEventListener("change", () => { cb.checked ? S.selected.add(r.uid) : S.selected.delete(r.uid); });
    tr.append(el("td", null, cb));
    const td = el("td", { class: "text" });
    if (S.editing === r.uid) {
      const inp = el("input", { type: "text", class: "edit-text" });
      inp.value = r.text;
      inp.addEventListener("keydown", ev => {
        if (ev.key === "Enter") { finishEdit(r, inp.value); ev.preventDefault(); }
        else if (ev.key === "Escape") { S.editing = null; renderRows(); ev.preventDefault(); }
        ev.stopPropagation();
      });
      td.append(inp);
      setTimeout(() => inp.focus(), 0);
    } else {
      td.append(el("span", { class: "neighbor-text", text: r.text }));
    }
    if (S.errors.has(r.uid)) td.append(el("span", { class: "error", text: S.errors.get(r.uid) }));
    tr.append(td, el("td", { text: r.kind }), el("td", null, el("span", { class: `badge ${r.status}`, text: r.status })));
    for (const k of S.version.score_keys) {
      const v = (r.orig.scores || {})[k];
      tr.append(el("td", { class: "num", text: v === undefined ? "" : v.toFixed(3) }));
    }
    const src = sourceText(r.orig.source);
    tr.append(el("td", { class: "muted source", text: src, title: src }),
              el("td", { class: "reason", text: r.status === "rejected" ? (r.reason || "") : "",
                         title: r.status === "rejected" ? (r.reason || "") : "" }));
    tr.append(el("td", { class: "actions" },
      el("button", { class: "do-accept", text: "accept", onclick: () => setStatus([r], "accepted") }),
      el("button", { class: "do-reject", text: "reject", onclick: () => setStatus([r], "rejected") }),
      el("button", { class: "do-edit", text: "edit", onclick: () => startEdit(r) }),
      el("button", { class: "do-remove", text: "remove", onclick: () => removeRows([r]) })));
    frag.append(tr);
  }
  body.replaceChildren(frag);
  const cur = body.querySelector("tr.cursor");
  if (cur) cur.scrollIntoView({ block: "nearest", inline: "start" });
}

function render() { renderClasses(); renderRows(); }

// ---- actions -------------------------------------------------------------------------------

function selectClass(idx) {
  if (idx < 0 || idx >= S.visibleClasses.length) return;
  S.classIndex = idx; S.cursor = null; S.selected.clear(); S.editing = null;
  render();
}

function setCursor(uid) { S.cursor = uid; renderRows(); }

function moveCursor(step) {
  const rows = classRowsShown(currentClass() ?? S.version.classes[0]);
  if (!rows.length) return;
  const i = rows.findIndex(r => r.uid === S.cursor);
  S.cursor = rows[Math.max(0, Math.min(rows.length - 1, (i < 0 ? 0 : i + step)))].uid;
  renderRows();
}

function targets() {
  const rows = classRowsShown(currentClass());
  const sel = rows.filter(r => S.selected.has(r.uid));
  if (sel.length) return sel;
  const cur = rows.find(r => r.uid === S.cursor);
  return cur ? [cur] : [];
}

function setStatus(rows, st) {
  const reason = $("reason").value.trim();
  for (const r of rows) {
    r.status = st;
    r.reason = st === "rejected" ? (reason || (r.orig.status === "rejected" ? r.orig.reason : null) || null) : null;
    S.errors.delete(r.uid);
  }
  render();
}

function removeRows(rows) {
  for (const r of rows) {
    if (r.added) {  // never stored: drop it for good
      S.rows.splice(S.rows.indexOf(r), 1);
      const list = S.byClass.get(r.orig.class); list.splice(list.indexOf(r), 1);
    } else r.removed = true;
    S.selected.delete(r.uid); S.errors.delete(r.uid);
  }
  render();
}

function startEdit(r) { S.editing = r.uid; S.cursor = r.uid; renderRows(); }

function finishEdit(r, text) {
  r.text = text; S.editing = null; S.errors.delete(r.uid);
  render();
}

function addNeighbor() {
  const c = currentClass();
  if (c === undefined) return;
  const text = $("new-text").value;
  const kind = $("new-kind").value;
  const r = makeRow({ class: c, text, kind, status: "accepted" }, "neighbors", true);
  addRow(r);
  $("new-text").value = "";
  S.cursor = r.uid;
  render();
}

// The lines a person would have in the checkout's two files; sent as such to `sept store commit`'s path.
function draftFiles() {
  const files = { neighbors: [], rejected: [] }, uids = { neighbors: [], rejected: [] };
  const order = [...S.rows.filter(r => !r.added), ...S.rows.filter(r => r.added)];
  for (const r of order) {
    if (r.removed) continue;
    let line;
    if (r.added) line = { class: r.orig.class, text: r.text, kind: r.kind, status: r.status };
    else {
      line = Object.assign({}, r.orig, { text: r.text, status: r.status });
      delete line.reason;
    }
    if (r.status === "rejected" && r.reason) line.reason = r.reason;
    files[r.file].push(line); uids[r.file].push(r.uid);
  }
  return { files, uids };
}

async function commit() {
  const { files, uids } = draftFiles();
  S.errors.clear();
  $("commit").disabled = true;
  status("note", "committing...");
  try {
    const res = await api("/api/commit", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ parent: S.version.id, latest_at_load: S.latestAtLoad,
                             message: $("commit-message").value, neighbors: files.neighbors, rejected: files.rejected }),
    });
    if (res.status === 422) {
      const msgs = [];
      for (const e of res.body.errors) {
        const uid = e.file && e.line ? uids[e.file][e.line - 1] : undefined;
        if (uid !== undefined) {
          S.errors.set(uid, e.message);
          const r = S.rows.find(x => x.uid === uid);
          const idx = S.visibleClasses.indexOf(r.orig.class);
          if (idx >= 0) { S.classIndex = idx; S.cursor = uid; }
          if (r.file === "rejected") S.showRejected = true;
          $("show-rejected").checked = S.showRejected;
        }
        msgs.push(e.message);
      }
      render();
      status("error", `nothing written: ${msgs.join("; ")}`);
      return;
    }
    if (!res.ok) { status("error", res.body.error || `HTTP ${res.status}`); return; }
    const notes = (res.body.notes || []).join("; ");
    const margins = res.body.margins && res.body.margins.status ? `; margins ${res.body.margins.status}` : "";
    const v = await api(`/api/version?v=${encodeURIComponent(res.body.id)}`);
    if (!v.ok) { status("error", v.body.error); return; }
    S.latestAtLoad = v.body.latest;
    loadVersion(v.body);
    location.hash = `v=${res.body.id}`;
    $("commit-message").value = "";
    render();
    status(notes ? "note" : "ok", `committed ${res.body.ref}${margins}${notes ? "; " + notes : ""}`);
    window.septLastCommit = res.body;
  } finally {
    $("commit").disabled = false;
  }
}

// ---- diff and plots ------------------------------------------------------------------------

async function loadVersionsInto() {
  const res = await api("/api/versions");
  if (!res.ok) { status("error", res.body.error); return; }
  const vs = res.body.versions;
  for (const [sel, pick] of [[$("diff-a"), S.version.parent || S.version.id], [$("diff-b"), S.version.id]]) {
    sel.replaceChildren(...vs.map(v => {
      const o = el("option", { value: v.id, text: `${v.ref}${v.tags.length ? " (" + v.tags.join(", ") + ")" : ""} ${v.message || ""}` });
      if (v.id === pick) o.selected = true;
      return o;
    }));
  }
}

async function showDiff() {
  const a = $("diff-a").value, b = $("diff-b").value;
  const res = await api(`/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  if (!res.ok) { status("error", res.body.error); return; }
  const d = res.body, s = d.summary;
  $("diff-summary").textContent = `${d.a} -> ${d.b}: ${s.added} added, ${s.removed} removed, ` +
    `${s.status_changed} status changed, ${s.text_changed} text changed`;
  const frag = document.createDocumentFragment();
  for (const c of d.classes_added) frag.append(el("p", { class: "add", text: `+ class ${c}` }));
  for (const c of d.classes_removed) frag.append(el("p", { class: "rem", text: `- class ${c}` }));
  for (const c of d.classes) {
    const ul = el("ul");
    for (const r of c.added) ul.append(el("li", { class: "add", text: `+ ${r.text} (${r.status})` }));
    for (const r of c.removed) ul.append(el("li", { class: "rem", text: `- ${r.text} (${r.status})` }));
    for (const t of c.text_changed) ul.append(el("li", { class: "chg", text: `~ text ${t.from} -> ${t.to}` }));
    for (const t of c.status_changed) ul.append(el("li", { class: "chg", text: `~ ${t.text}: ${t.from} -> ${t.to}` }));
    frag.append(el("div", { class: "diff-class" }, el("h3", { text: c.class }), ul));
  }
  if (!d.classes.length && !d.classes_added.length && !d.classes_removed.length) frag.append(el("p", { text: "no changes" }));
  $("diff-body").replaceChildren(frag);
}

async function showPlots() {
  const res = await api(`/api/plots?v=${encodeURIComponent(S.version.id)}`);
  if (!res.ok) { status("error", res.body.error); return; }
  $("plots-body").replaceChildren(...res.body.plots.map(name => el("figure", null,
    el("figcaption", { text: name }),
    el("img", { alt: name, src: `/api/plot?v=${encodeURIComponent(S.version.id)}&name=${encodeURIComponent(name)}&token=${encodeURIComponent(S.token)}` }))));
}

function showPanel(id) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.panel === id);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.id !== id);
  if (id === "panel-diff") loadVersionsInto();
  if (id === "panel-plots") showPlots();
}

// ---- keyboard ------------------------------------------------------------------------------

function onKey(ev) {
  const t = ev.target;
  if (t && (t.tagName === "INPUT" && t.type !== "checkbox" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if ($("panel-review").classList.contains("hidden")) return;
  const keys = {
    j: () => moveCursor(1), ArrowDown: () => moveCursor(1),
    k: () => moveCursor(-1), ArrowUp: () => moveCursor(-1),
    n: () => selectClass(S.classIndex + 1), p: () => selectClass(S.classIndex - 1),
    a: () => setStatus(targets(), "accepted"), r: () => setStatus(targets(), "rejected"),
    e: () => { const r = targets()[0]; if (r) startEdit(r); },
    d: () => removeRows(targets()),
    x: () => { if (S.cursor !== null) { S.selected.has(S.cursor) ? S.selected.delete(S.cursor) : S.selected.add(S.cursor); renderRows(); } },
    v: () => { S.showRejected = !S.showRejected; $("show-rejected").checked = S.showRejected; renderRows(); },
    "/": () => $("filter").focus(),
  };
  const f = keys[ev.key];
  if (f) { ev.preventDefault(); f(); }
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  const q = new URLSearchParams(location.search);
  S.token = q.get("token") || sessionStorage.getItem(TOKEN_KEY);
  if (q.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, S.token);
    // keep the token out of the address bar, history and screenshots
    history.replaceState(null, "", location.pathname + location.hash);
  }
  if (!S.token) { status("error", "no review token: open the URL that `sept review` printed"); return; }
  const hv = new URLSearchParams(location.hash.slice(1)).get("v");
  const res = await api(hv ? `/api/version?v=${encodeURIComponent(hv)}` : "/api/version");
  if (!res.ok) { status("error", res.body.error || `HTTP ${res.status}`); return; }
  S.latestAtLoad = res.body.latest;
  loadVersion(res.body);
  $("new-kind").replaceChildren(...KINDS.map(k => el("option", { value: k, text: k })));
  render();
  S.timing.firstRender = performance.now();
  // a task queued from the next animation frame runs once that frame is painted
  requestAnimationFrame(() => setTimeout(() => { S.timing.firstFrame = performance.now(); }));
  document.body.dataset.ready = "1";

  $("filter").addEventListener("input", ev => { S.filter = ev.target.value.trim().toLowerCase(); render(); });
  $("show-rejected").addEventListener("change", ev => { S.showRejected = ev.target.checked; renderRows(); });
  $("bulk-accept").addEventListener("click", () => setStatus(classRowsShown(currentClass()).filter(r => S.selected.has(r.uid)), "accepted"));
  $("bulk-reject").addEventListener("click", () => setStatus(classRowsShown(currentClass()).filter(r => S.selected.has(r.uid)), "rejected"));
  $("add").addEventListener("click", addNeighbor);
  $("new-text").addEventListener("keydown", ev => { if (ev.key === "Enter") { addNeighbor(); ev.preventDefault(); } });
  $("commit").addEventListener("click", commit);
  $("diff-show").addEventListener("click", showDiff);
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => showPanel(t.dataset.panel));
  document.addEventListener("keydown", onKey);
  window.addEventListener("beforeunload", ev => { if (S.rows.some(rowChanged)) { ev.preventDefault(); ev.returnValue = ""; } });
}

window.septReview = { state: S, selectClass, render };
start();
