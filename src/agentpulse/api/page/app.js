// agentpulse fleet page: plain JavaScript, no build, no external asset. Everything it shows comes from the
// API on the same port; live changes come from GET /agents/stream (read with fetch, so the token stays in a
// header). Agent text is only ever set with textContent, never as HTML.
"use strict";

const STATUSES = ["active", "disconnected", "pending", "never_connected"];
const WORDS = { active: "Active", disconnected: "Disconnected", pending: "Pending", never_connected: "Never connected" };
const REASONS = {
  0: "", 1: "agent version newer than the manager's", 2: "agent version not received", 3: "shutdown message received",
  4: "no keep-alive within the timeout", 5: "reset by manager start", 6: "connection lost, not back within the grace time",
};
const PAGE = 50;
const FEED_MAX = 60;

const state = {
  token: sessionStorage.getItem("agentpulse.token"),
  counts: null,
  series: [],
  offset: 0, total: 0, sort: "id", search: "", status: "",
  streamAbort: null, reloadTimer: null, chartMinute: 0, healthTimer: null,
};

const $ = (id) => document.getElementById(id);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
};

// -- theme ----------------------------------------------------------------------------------------------
function applyTheme(theme) { document.documentElement.dataset.theme = theme; }
applyTheme(localStorage.getItem("agentpulse.theme") ||
  (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));

// -- the API --------------------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && !path.startsWith("/security")) { logout(); throw new Error("unauthorized"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const basic = btoa(unescape(encodeURIComponent($("user").value + ":" + $("password").value)));
  try {
    const reply = await api("/security/user/authenticate", { method: "POST", headers: { Authorization: "Basic " + basic } });
    state.token = reply.data.token;
    sessionStorage.setItem("agentpulse.token", state.token);
    $("password").value = "";
    start();
  } catch (error) {
    $("login-error").textContent = error.message === "unauthorized" ? "Invalid credentials" : error.message;
  }
}

function logout() {
  state.token = null;
  sessionStorage.removeItem("agentpulse.token");
  if (state.streamAbort) state.streamAbort.abort();
  $("app").classList.add("hidden");
  $("logout").classList.add("hidden");
  $("detail").classList.add("hidden");
  $("nats").classList.add("hidden");
  $("login-view").classList.remove("hidden");
  setLive(false);
}

// -- counts and the chart -------------------------------------------------------------------------------
function showCounts(counts) {
  state.counts = counts;
  let total = 0;
  for (const status of STATUSES) {
    $("count-" + status).textContent = (counts[status] || 0).toLocaleString();
    total += counts[status] || 0;
  }
  $("count-total").textContent = total.toLocaleString();
  tickChart();
}

async function loadChart() {
  const reply = await api("/agents/summary/status/history?minutes=60");
  state.series = reply.data.series.map((point) => Object.assign({}, point, { t: Date.parse(point.at) }));
  state.chartMinute = Math.floor(Date.now() / 60000);
  showCounts(reply.data.now);
}

function tickChart() {
  if (!state.counts || !state.series.length) return;
  const minute = Math.floor(Date.now() / 60000);
  const point = Object.assign({ t: minute * 60000 }, state.counts);
  if (minute !== state.chartMinute) {
    state.series.push(point);
    while (state.series.length > 60) state.series.shift();
    state.chartMinute = minute;
  } else {
    state.series[state.series.length - 1] = point;
  }
  drawChart();
}

function drawChart() {
  const svg = $("chart");
  const width = 600, height = 160, series = state.series;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const peak = Math.max(1, ...series.map((p) => STATUSES.reduce((sum, s) => sum + (p[s] || 0), 0)));
  const x = (i) => (series.length < 2 ? width : (i / (series.length - 1)) * width);
  const y = (v) => height - (v / peak) * (height - 8);
  const below = series.map(() => 0);
  const styles = getComputedStyle(document.documentElement);
  for (const status of STATUSES) {
    const top = series.map((p, i) => below[i] + (p[status] || 0));
    let d = "M" + series.map((_, i) => x(i).toFixed(1) + "," + y(top[i]).toFixed(1)).join(" L");
    for (let i = series.length - 1; i >= 0; i--) d += " L" + x(i).toFixed(1) + "," + y(below[i]).toFixed(1);
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d + " Z");
    path.setAttribute("fill", styles.getPropertyValue("--" + status).trim());
    path.setAttribute("fill-opacity", "0.8");
    path.dataset.status = status;
    svg.appendChild(path);
    top.forEach((v, i) => { below[i] = v; });
  }
}

function legend() {
  const box = $("legend");
  for (const status of STATUSES) {
    const item = el("span", "s-" + status, WORDS[status]);
    item.style.setProperty("--c", "var(--" + status + ")");
    box.appendChild(item);
  }
}

// -- the table ------------------------------------------------------------------------------------------
function ago(epochMs) {
  const seconds = Math.max(0, Math.round((Date.now() - epochMs) / 1000));
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return Math.floor(seconds / 86400) + " d ago";
}

function badge(status) { return el("span", "badge s-" + status, WORDS[status] || status); }

async function loadPage() {
  const params = new URLSearchParams({ limit: PAGE, offset: state.offset, sort: (state.sortDesc ? "-" : "+") + state.sort, q: "id!=000" });
  if (state.search) params.set("search", state.search);
  if (state.status) params.set("status", state.status);
  const reply = await api("/agents?" + params.toString());
  state.total = reply.data.total_affected_items;
  const body = $("rows");
  while (body.firstChild) body.removeChild(body.firstChild);
  for (const agent of reply.data.affected_items) body.appendChild(row(agent));
  const last = Math.min(state.offset + PAGE, state.total);
  $("page-info").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total.toLocaleString()}` : "no agents";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= state.total;
  document.querySelectorAll("th[data-sort]").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("desc", th.dataset.sort === state.sort && !!state.sortDesc);
  });
}

function row(agent) {
  const tr = el("tr");
  tr.dataset.id = agent.id;
  const os = agent.os ? [agent.os.name, agent.os.version].filter(Boolean).join(" ") : "";
  const cells = [
    el("td", "", agent.id), el("td", "", agent.name), el("td", "", agent.ip || ""),
    el("td", "status"), el("td", "reason muted", agent.status === "disconnected" ? REASONS[agent.status_code] || "" : ""),
    el("td", "ago"), el("td", "", agent.version || ""), el("td", "", os),
    el("td", "", (agent.group || []).join(", ")),
    el("td", "", agent.group_config_status === "synced" ? "synced" : "not synced"),
  ];
  cells[3].appendChild(badge(agent.status));
  if (agent.lastKeepAlive) cells[5].dataset.at = String(Date.parse(agent.lastKeepAlive));
  cells[5].textContent = agent.lastKeepAlive ? ago(Date.parse(agent.lastKeepAlive)) : "never";
  cells.forEach((cell) => tr.appendChild(cell));
  tr.addEventListener("click", () => openDetail(agent.id));
  return tr;
}

function refreshAges() {
  document.querySelectorAll("td.ago[data-at]").forEach((cell) => { cell.textContent = ago(Number(cell.dataset.at)); });
}

function scheduleReload() {
  if (state.reloadTimer) return;
  state.reloadTimer = setTimeout(() => { state.reloadTimer = null; loadPage().catch(() => {}); loadGroups().catch(() => {}); }, 1500);
}

// -- groups ---------------------------------------------------------------------------------------------
async function loadGroups() {
  const reply = await api("/groups?limit=200&sort=-count");
  const box = $("groups");
  while (box.firstChild) box.removeChild(box.firstChild);
  for (const group of reply.data.affected_items) {
    const card = el("div", "group");
    card.appendChild(el("div", "name", group.name));
    card.appendChild(el("div", "n", group.count.toLocaleString()));
    card.appendChild(el("div", "muted", group.count === 1 ? "agent" : "agents"));
    card.addEventListener("click", () => { $("search").value = group.name; state.search = group.name; state.offset = 0; loadPage(); });
    box.appendChild(card);
  }
}

// -- NATS health (GET /manager/status, every 10 s: the manager reads its streams back as often) ----------
function natsHealth(nats) {
  if (!nats || !nats.enabled) return null;  // no NATS configured: nothing to show
  if (!nats.connected) return { ok: false, text: "NATS away", title: "NATS connection down: status events wait in the outbox" };
  const streams = Object.entries(nats.streams || {});
  const replicas = (list) => list.map(([n, s]) => n + ": " + s.current + " of " + s.replicas + " replicas current").join("; ");
  const degraded = streams.filter(([, s]) => s && s.degraded);
  if (degraded.length) {
    const [name, first] = degraded[0];
    return { ok: false, text: "NATS " + name + " " + first.current + "/" + first.replicas, title: replicas(degraded) };
  }
  const known = streams.filter(([, s]) => s && s.replicas);
  return { ok: true, text: "NATS ok", title: replicas(known) || "NATS connected" };
}

async function loadHealth() {
  let health = null;
  try { health = natsHealth((await api("/manager/status")).data.nats); } catch (error) { return; }
  const pill = $("nats");
  pill.classList.toggle("hidden", !health);
  if (!health) return;
  pill.classList.toggle("on", health.ok);
  pill.classList.toggle("warn", !health.ok);
  pill.textContent = health.text;
  pill.title = health.title;
}

// -- the live stream ------------------------------------------------------------------------------------
function setLive(on) {
  const live = $("live");
  live.classList.toggle("on", on);
  live.classList.toggle("off", !on);
  live.textContent = on ? "live" : "offline";
}

async function stream() {
  if (state.streamAbort) state.streamAbort.abort();
  const abort = new AbortController();
  state.streamAbort = abort;
  try {
    const response = await fetch("/agents/stream?snapshot=true", { headers: { Authorization: "Bearer " + state.token }, signal: abort.signal });
    if (response.status === 401) { logout(); return; }
    if (!response.ok || !response.body) throw new Error("stream " + response.status);
    setLive(true);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        onEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (error) {
    if (abort.signal.aborted) return;
  }
  setLive(false);
  if (state.token && !abort.signal.aborted) setTimeout(stream, 2000);
}

function onEvent(block) {
  let name = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const doc = JSON.parse(data);
  if (name === "snapshot") showCounts(doc.counts);
  if (name === "status") {
    showCounts(doc.counts);
    const visible = new Map();
    document.querySelectorAll("#rows tr").forEach((tr) => visible.set(tr.dataset.id, tr));
    doc.changes.slice(-FEED_MAX).forEach(feed);
    for (const change of doc.changes) updateRow(change, visible.get(change.id));
    if (state.status || state.search || state.sort !== "id") scheduleReload();
  }
  if (name === "resync") {  // too many changes at once to list: the counts, and the page read again
    showCounts(doc.counts);
    const note = el("li", "muted", `${doc.changes.toLocaleString()} changes at once`);
    $("feed").insertBefore(note, $("feed").firstChild);
    scheduleReload();
  }
}

function feed(change) {
  const list = $("feed");
  const item = el("li");
  item.appendChild(el("span", "time", new Date(change.at * 1000).toLocaleTimeString()));
  item.appendChild(el("strong", "", change.id));
  item.appendChild(el("span", "", change.name || ""));
  if (change.kind === "registered") item.appendChild(el("span", "muted", "registered"));
  else if (change.kind === "removed") item.appendChild(el("span", "muted", "removed"));
  else { item.appendChild(badge(change.from)); item.appendChild(el("span", "muted", "→")); item.appendChild(badge(change.to)); }
  list.insertBefore(item, list.firstChild);
  while (list.children.length > FEED_MAX) list.removeChild(list.lastChild);
  $("feed-count").textContent = list.children.length + " recent";
}

function updateRow(change, tr) {
  if (!tr) { if (change.kind !== "change") scheduleReload(); return; }
  if (change.kind === "removed") { tr.remove(); return; }
  const cell = tr.querySelector("td.status");
  while (cell.firstChild) cell.removeChild(cell.firstChild);
  cell.appendChild(badge(change.to));
  tr.querySelector("td.reason").textContent = change.to === "disconnected" ? change.reason : "";
  if (change.to === "active" || change.to === "pending") {
    const ageCell = tr.querySelector("td.ago");
    ageCell.dataset.at = String(change.at * 1000);
    ageCell.textContent = ago(change.at * 1000);
  }
}

// -- agent detail ---------------------------------------------------------------------------------------
async function openDetail(id) {
  const [agents, history] = await Promise.all([api("/agents?agents_list=" + id), api("/agents/" + id + "/history?limit=50")]);
  const agent = agents.data.affected_items[0] || { id };
  $("detail-title").textContent = `${agent.id} · ${agent.name || ""}`;
  const fields = $("detail-fields");
  while (fields.firstChild) fields.removeChild(fields.firstChild);
  const show = {
    Status: WORDS[agent.status] || agent.status, IP: agent.ip, "Registered IP": agent.registerIP, Version: agent.version,
    OS: agent.os ? [agent.os.name, agent.os.version, agent.os.arch].filter(Boolean).join(" ") : "",
    Groups: (agent.group || []).join(", "), "Last keep-alive": agent.lastKeepAlive, Registered: agent.dateAdd,
    Config: agent.group_config_status, Node: agent.node_name,
  };
  for (const [label, value] of Object.entries(show)) {
    if (!value) continue;
    fields.appendChild(el("dt", "", label));
    fields.appendChild(el("dd", "", value));
  }
  const timeline = $("timeline");
  while (timeline.firstChild) timeline.removeChild(timeline.firstChild);
  for (const entry of history.data.affected_items) {
    const item = el("li", "s-" + entry.to);
    item.style.setProperty("--c", "var(--" + entry.to + ")");
    item.appendChild(el("div", "", `${WORDS[entry.from] || entry.from} → ${WORDS[entry.to] || entry.to}`));
    item.appendChild(el("div", "muted", entry.reason === "none" ? "" : entry.reason));
    item.appendChild(el("div", "when", new Date(entry.at_epoch * 1000).toLocaleString()));
    timeline.appendChild(item);
  }
  if (!history.data.affected_items.length) timeline.appendChild(el("li", "muted", "no status change recorded"));
  $("detail").classList.remove("hidden");
}

// -- start ----------------------------------------------------------------------------------------------
async function start() {
  $("login-view").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("logout").classList.remove("hidden");
  try {
    await Promise.all([loadChart(), loadPage(), loadGroups()]);
  } catch (error) { return; }
  loadHealth();
  if (state.healthTimer === null) state.healthTimer = setInterval(() => { if (state.token) loadHealth(); }, 10000);
  stream();
}

function wire() {
  legend();
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("agentpulse.theme", next);
    applyTheme(next);
    drawChart();
  });
  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = $("search").value.trim(); state.offset = 0; loadPage(); }, 250);
  });
  $("status-filter").addEventListener("change", () => { state.status = $("status-filter").value; state.offset = 0; loadPage(); });
  document.querySelectorAll(".count").forEach((card) => card.addEventListener("click", () => {
    $("status-filter").value = card.dataset.status; state.status = card.dataset.status; state.offset = 0; loadPage();
  }));
  document.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    if (state.sort === th.dataset.sort) state.sortDesc = !state.sortDesc; else { state.sort = th.dataset.sort; state.sortDesc = false; }
    state.offset = 0; loadPage();
  }));
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadPage(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadPage(); });
  $("detail-close").addEventListener("click", () => $("detail").classList.add("hidden"));
  setInterval(refreshAges, 1000);
  setInterval(tickChart, 10000);
  if (state.token) start();
}

document.addEventListener("DOMContentLoaded", wire);
