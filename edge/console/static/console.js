// edge-console: one page, no build step. The server sends the state every half second (server-sent events);
// this script draws it and sends operators' actions with the session's CSRF token.
"use strict";

const state = { session: null, events: null, station: null, last: null, preview: null, reject: null };
const $ = (id) => document.getElementById(id);

function text(id, value) { $(id).textContent = value == null ? "" : String(value); }
function percent(rate, digits = 1) { return rate == null ? "–" : (100 * rate).toFixed(digits) + " %"; }
function number(value, digits = 4) { return value == null ? "–" : Number(value).toFixed(digits); }
function query(params) { return new URLSearchParams(params).toString(); }

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.session.csrf },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = { ok: false, error: response.statusText }; }
  if (response.status === 401 && path !== "/api/login") { showLogin(); }
  return answer;
}

async function boot() {
  state.session = await api("/api/session");
  $("logout").onclick = async () => { await api("/api/logout", {}); location.reload(); };
  $("login-form").onsubmit = login;
  bindControls();
  window.addEventListener("hashchange", route);
  if (state.session.login && !state.session.user) { showLogin(); } else { route(); }
}

function showLogin() {
  if (state.events) { state.events.close(); state.events = null; }
  for (const id of ["fleet", "station"]) { $(id).hidden = true; }
  $("login").hidden = false;
  $("logout").hidden = true;
  text("who", "");
}

async function login(event) {
  event.preventDefault();
  const answer = await api("/api/login", { user: $("login-user").value, password: $("login-password").value });
  if (!answer.ok) { text("login-error", answer.error); return; }
  state.session = { ...state.session, user: answer.user, role: answer.role, csrf: answer.csrf };
  $("login-password").value = "";
  text("login-error", "");
  $("login").hidden = true;
  route();
}

function route() {
  const match = location.hash.match(/^#\/station\/(.+)$/);
  state.station = match ? decodeURIComponent(match[1]) : null;
  state.preview = null;
  $("login").hidden = true;
  $("fleet").hidden = state.station !== null;
  $("station").hidden = state.station === null;
  $("logout").hidden = !state.session.login;
  text("who", state.session.user ? `${state.session.user} (${state.session.role})` : "");
  const operator = state.session.role === "operator";
  for (const id of ["pause", "resume", "set-threshold", "set-recipe", "mark-good", "mark-defect"]) {
    $(id).disabled = !operator;
  }
  text("controls-note", operator ? "" : "Viewers see the controls; only operators may use them.");
  $("crumbs").innerHTML = "";
  if (state.station !== null) {
    const back = document.createElement("a");
    back.href = "#/";
    back.textContent = "all stations";
    $("crumbs").append(back, " / " + state.station);
    text("station-name", state.station);
  }
  if (state.events) { state.events.close(); }
  const path = "/api/events" + (state.station !== null ? "?" + query({ station: state.station }) : "");
  state.events = new EventSource(path);
  state.events.onmessage = (message) => draw(JSON.parse(message.data));
}

function draw(payload) {
  state.last = payload;
  if (state.station === null) { drawFleet(payload.stations); return; }
  const summary = payload.stations.find((s) => s.name === state.station);
  if (!summary) { text("verdict", "unknown station"); return; }
  drawStation(summary, payload.detail || {});
}

function drawFleet(stations) {
  const cards = $("fleet-cards");
  cards.innerHTML = "";
  for (const s of stations) {
    const card = document.createElement("a");
    card.className = "card";
    card.href = "#/station/" + encodeURIComponent(s.name);
    card.dataset.station = s.name;
    const last = s.last ? s.last.verdict : "–";
    card.innerHTML = `<div class="name"></div><div class="state state-${s.state}"></div>
      <div class="big verdict ${last}"></div><div class="muted"></div>`;
    card.children[0].textContent = s.name;
    card.children[1].textContent = s.state + (s.reason ? `: ${s.reason}` : "");
    card.children[2].textContent = last;
    card.children[3].textContent = `yield ${percent(s.yield)} · ${s.parts_per_minute.toFixed(0)} parts/min`;
    cards.append(card);
  }
}

function drawStation(s, detail) {
  const last = s.last || {};
  const verdict = $("verdict");
  verdict.textContent = s.current ? (last.verdict === "error" ? `error: ${last.reason}` : last.verdict || "–")
    : (s.state === "offline" ? "offline" : last.verdict || "–");
  verdict.className = "verdict " + (s.current ? last.verdict || "" : "");
  text("score-line", last.score == null ? "no score" : `score ${number(last.score)} · threshold ${number(last.threshold)}`);
  const top = Math.max(2 * (last.threshold || 1), last.score || 0);
  $("score-bar").style.width = last.score == null ? "0" : `${Math.min(100, (100 * last.score) / top)}%`;
  $("score-bar").style.background = last.verdict === "fail" ? "var(--fail)" : "var(--pass)";
  $("threshold-mark").style.left = `${(100 * (last.threshold || 0)) / top}%`;
  text("recipe-line", [s.recipe && `recipe ${s.recipe}`, last.model && `model ${last.model.slice(0, 19)}`,
    last.seq != null && `seq ${last.seq}`, last.frame_id != null && `frame ${last.frame_id}`].filter(Boolean).join(" · "));
  if (s.preview != null && s.preview !== state.preview) {
    state.preview = s.preview;
    $("preview").src = "/api/preview.jpg?" + query({ station: s.name, n: s.preview });
  }
  const st = $("state");
  st.textContent = s.state;
  st.className = "state-" + s.state;
  text("count-pass", s.counters.pass);
  text("count-fail", s.counters.fail);
  text("count-error", s.counters.error);
  text("yield", percent(s.yield));
  text("ppm", s.parts_per_minute.toFixed(0));
  text("latency", s.latency_ms.p50 == null ? "–" : `${s.latency_ms.p50.toFixed(1)} / ${s.latency_ms.p99.toFixed(1)} ms`);
  text("reason", s.reason ? `${s.health}: ${s.reason}` : "");
  text("drift", s.drift ? `good-score drift: ${JSON.stringify(s.drift.shift_std ?? s.drift)}` : "");
  const change = s.change;
  text("change", change ? `last change: ${change.command} by ${change.by}` +
    (change.thresholds ? ` → threshold ${number(change.thresholds.score)}` : "") +
    (change.name ? ` → ${change.name}` : "") : "");
  drawControls(s, detail);
  drawReview(detail);
  drawGallery(s, detail);
}

function drawControls(s, detail) {
  if (!s.controls) { text("controls-note", "No control link to this station (edge-console --control)."); }
  const input = $("threshold-input");
  if (detail.thresholds && document.activeElement !== input && !input.dataset.touched) {
    input.value = detail.thresholds.score;
  }
  const select = $("recipe-select");
  const recipes = detail.recipes || [];
  $("recipe-row").hidden = recipes.length === 0;
  if (select.options.length !== recipes.length) {
    select.innerHTML = "";
    for (const name of recipes) { select.add(new Option(name, name)); }
  }
  drawHistogram(detail.calibration, Number(input.value));
}

function drawHistogram(calibration, threshold) {
  const svg = $("histogram");
  svg.innerHTML = "";
  const histogram = calibration && calibration.histogram;
  if (!histogram) { svg.style.display = "none"; return; }
  svg.style.display = "";
  const edges = histogram.edges, counts = histogram.counts;
  const low = edges[0], high = Math.max(edges[edges.length - 1], threshold || 0) * 1.05;
  const x = (v) => (240 * (v - low)) / (high - low || 1);
  const peak = Math.max(...counts, 1);
  counts.forEach((count, i) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", x(edges[i]));
    rect.setAttribute("width", Math.max(1, x(edges[i + 1]) - x(edges[i]) - 0.5));
    rect.setAttribute("y", 60 - (58 * count) / peak);
    rect.setAttribute("height", (58 * count) / peak);
    svg.append(rect);
  });
  if (Number.isFinite(threshold)) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", x(threshold)); line.setAttribute("x2", x(threshold));
    line.setAttribute("y1", 0); line.setAttribute("y2", 60);
    svg.append(line);
  }
}

function drawReview(detail) {
  const c = detail.calibration;
  if (!c || !c.calibrated) { text("review-summary", "No calibration known for the model in force."); text("recalibration", ""); return; }
  text("review-summary", `${c.false_rejects_marked} false reject(s) marked since the calibration of ${c.calibrated}` +
    ` (threshold ${number(c.threshold)} for ${percent(c.target_false_reject, 2)} false rejects).`);
  const r = c.recalibration;
  text("recalibration", !r ? "" : r.error ? `Re-calibration: ${r.error}` :
    `Re-calibrating with them (${r.good_images} good images): threshold ${number(r.threshold)}; ` +
    `the current threshold would be expected to reject ${percent(r.current_false_reject, 2)} of good parts.`);
}

function drawGallery(s, detail) {
  text("rejects-note", detail.rejects_folder ? (detail.rejects.length ? "" : "No rejects yet.")
    : "No reject folder for this station (edge-console --rejects NAME=DIR).");
  // Keyed by record: a thumbnail stays where it is while newer ones arrive in front of it.
  const gallery = $("gallery");
  const wanted = new Map(detail.rejects.map((r) => [r.id, r]));
  for (const thumb of [...gallery.children]) {
    if (!wanted.has(thumb.dataset.record) || thumb.dataset.station !== s.name) { thumb.remove(); }
  }
  let before = gallery.firstChild;
  for (const r of detail.rejects) {
    let thumb = [...gallery.children].find((t) => t.dataset.record === r.id);
    if (!thumb) {
      thumb = document.createElement("button");
      thumb.dataset.record = r.id;
      thumb.dataset.station = s.name;
      const img = document.createElement("img");
      img.src = "/api/reject.png?" + query({ station: s.name, id: r.id });
      img.alt = `reject ${r.id}`;
      const facts = document.createElement("div");
      facts.className = "facts";
      thumb.append(img, facts);
      gallery.insertBefore(thumb, before);
    }
    thumb.className = "thumb" + (r.mark ? ` marked-${r.mark}` : "");
    thumb.lastChild.textContent = `frame ${r.frame_id} · ${number(r.score, 3)}${r.mark ? " · " + r.mark : ""}`;
    thumb.onclick = () => openReject(s.name, r);
    before = thumb.nextSibling;
  }
}

function openReject(station, r) {
  state.reject = { station, id: r.id };
  $("reject-picture").src = "/api/reject.png?" + query({ station, id: r.id });
  text("reject-facts", `${r.time} · seq ${r.seq} · frame ${r.frame_id} · score ${number(r.score)} ` +
    `(threshold ${number(r.threshold)}) · ${r.regions} region(s)${r.recipe ? " · recipe " + r.recipe : ""}` +
    (r.mark ? ` · marked ${r.mark}` : ""));
  text("mark-answer", "");
  $("reject-dialog").showModal();
}

async function mark(kind) {
  const answer = await api("/api/review", { station: state.reject.station, id: state.reject.id, mark: kind });
  text("mark-answer", answer.ok ? `marked ${kind}: ${answer.file}` : answer.error);
}

async function control(body) {
  const answer = await api("/api/control", { station: state.station, ...body });
  text("control-answer", answer.ok ? `${body.command}: done` : `${body.command} refused: ${answer.error}`);
  $("control-answer").className = answer.ok ? "muted" : "error";
}

async function expectedFalseReject() {
  const value = Number($("threshold-input").value);
  if (!Number.isFinite(value) || state.station === null) { return; }
  const answer = await api("/api/false-reject?" + query({ station: state.station, threshold: value }));
  text("threshold-fr", answer.expected_false_reject == null ? "no calibration to estimate false rejects from"
    : `expected false rejects at ${number(value)}: ${percent(answer.expected_false_reject, 2)}`);
}

function bindControls() {
  $("pause").onclick = () => control({ command: "pause", reason: "paused from the console" });
  $("resume").onclick = () => control({ command: "resume" });
  $("set-threshold").onclick = () => {
    $("threshold-input").dataset.touched = "";
    delete $("threshold-input").dataset.touched;
    control({ command: "set_threshold", score: Number($("threshold-input").value) });
  };
  $("threshold-input").oninput = () => { $("threshold-input").dataset.touched = "1"; expectedFalseReject(); };
  $("set-recipe").onclick = () => control({ command: "set_recipe", name: $("recipe-select").value });
  $("mark-good").onclick = () => mark("good");
  $("mark-defect").onclick = () => mark("defect");
  $("close-dialog").onclick = () => $("reject-dialog").close();
}

boot();
