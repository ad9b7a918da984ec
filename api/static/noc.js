// NOC Stream operator console. No dependencies, no external requests.
//
// Flow: token (from /?token=..., kept in sessionStorage) -> WebSocket (token in the
// "bearer.<token>" sub-protocol). On a fresh "connected" the page loads a REST snapshot and
// then applies events newer than the "last_event_id" the server reported; on reconnect it
// resumes with ?last_event_id=<last applied id> and the server replays what was missed.
"use strict";

const SEVERITY_RANK = { critical: 1, high: 2, medium: 3, low: 4, info: 5 };
const OPEN = new Set(["new", "acknowledged"]);
const COLORS = {
  inside: "#2fd07f", outside: "#ff3b3b", uncertain: "#f5c542", unzoned: "#8493a8",
  zone: "#3d7bd9", critical: "#ff3b3b", text: "#e3e9f1", muted: "#8493a8",
};

const state = {
  token: null,
  me: null,
  ws: null,
  lastEventId: null, // id of the last event applied; null until the first snapshot
  snapshotLoading: false,
  pending: [], // events received while the snapshot loads
  alerts: new Map(),
  guards: new Map(),
  zones: new Map(),
  devices: new Map(),
  retryMs: 500,
  retryTimer: null,
  stopped: false,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- token

function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("noc.token", fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem("noc.token");
}

function askForToken(reason) {
  state.stopped = true;
  setConn("unauthorized", "SIGN IN");
  $("login-reason").textContent = reason || "Paste the token issued with `noc token`.";
  $("login").hidden = false;
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) return;
  sessionStorage.setItem("noc.token", token);
  $("login").hidden = true;
  start();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("noc.token");
  if (state.ws) state.ws.close();
  askForToken("Signed out.");
});

// ---------------------------------------------------------------- REST

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
  });
  if (res.status === 401) {
    askForToken("The token was rejected (expired or revoked). Paste a new one.");
    throw new Error("unauthorized");
  }
  const body = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error((body && body.detail) || `${res.status}`);
  return body;
}

async function loadSnapshot() {
  state.snapshotLoading = true;
  try {
    const [open, guards, zones, devices] = await Promise.all([
      api("/api/alerts?status=open&limit=500"),
      api("/api/guards"),
      api("/api/zones"),
      api("/api/devices"),
    ]);
    state.alerts = new Map(open.items.map((a) => [a.alert_id, a]));
    state.guards = new Map(guards.map((g) => [g.guard_id, g]));
    state.zones = new Map(zones.map((z) => [z.zone_id, z]));
    state.devices = new Map(devices.map((d) => [d.device_id, d]));
  } finally {
    state.snapshotLoading = false;
  }
  const queued = state.pending;
  state.pending = [];
  for (const ev of queued) apply(ev);
  renderAll();
}

// ---------------------------------------------------------------- WebSocket

function connect() {
  clearTimeout(state.retryTimer);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const path = (state.me && state.me.ws_path) || "/ws";
  let url = `${proto}//${location.host}${path}`;
  if (state.lastEventId !== null) url += `?last_event_id=${state.lastEventId}`;
  setConn(state.lastEventId === null ? "connecting" : "reconnecting");
  const ws = new WebSocket(url, ["noc.v1", `bearer.${state.token}`]);
  state.ws = ws;
  ws.onmessage = (msg) => onMessage(JSON.parse(msg.data));
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (ev.code === 4401) {
      askForToken(`The server refused the token: ${ev.reason || "unauthorized"}.`);
      return;
    }
    if (state.stopped) return;
    setConn("offline", "OFFLINE");
    const delay = ev.code === 4429 ? 0 : state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 10000);
    const jitter = delay ? Math.random() * 250 : 0;
    state.retryTimer = setTimeout(connect, delay + jitter);
  };
}

function onMessage(m) {
  if (m.type === "connected") {
    state.retryMs = 500;
    setConn("live", "LIVE");
    if (m.resumed_from === null) {
      state.lastEventId = m.last_event_id;
      loadSnapshot().catch((e) => say(`snapshot failed: ${e.message}`));
    }
    return;
  }
  if (m.type === "reset") {
    say(`resync: ${m.reason}`);
    loadSnapshot().catch((e) => say(`snapshot failed: ${e.message}`));
    return;
  }
  if (m.type === "overflow") {
    say("fell behind; resuming");
    return; // the server closes with 4429 and we reconnect at once
  }
  if (typeof m.id !== "number") return;
  if (state.lastEventId !== null && m.id <= state.lastEventId) return; // already applied
  state.lastEventId = m.id;
  $("last-event").textContent = `last event #${m.id} · ${m.type}`;
  if (state.snapshotLoading) {
    state.pending.push(m);
    return;
  }
  apply(m);
  scheduleRender();
}

function apply(ev) {
  const d = ev.data;
  switch (ev.type) {
    case "alert":
    case "alert_update": {
      const prev = state.alerts.get(d.alert_id);
      state.alerts.set(d.alert_id, { ...(prev || {}), ...d });
      if (ev.type === "alert" && d.severity === "critical") flashTitle();
      seen(d.device_id, d.last_seen);
      break;
    }
    case "position": {
      const g = state.guards.get(d.guard_id) || { guard_id: d.guard_id, name: `Guard ${d.guard_id}` };
      const prevTs = g.position ? g.position.ts : null;
      if (!prevTs || Date.parse(d.ts) >= Date.parse(prevTs)) {
        g.position = {
          ts: d.ts, lat: d.lat, lon: d.lon, accuracy: d.accuracy,
          zone_status: d.zone_status, zone_id: d.zone_id,
        };
      }
      state.guards.set(d.guard_id, g);
      seen(d.device_id, d.ts);
      break;
    }
    case "device_status": {
      const dev = state.devices.get(d.device_id);
      if (dev) {
        dev.last_seen = d.last_seen;
        dev.battery = d.battery;
        dev.signal = d.signal;
        dev.status = "online";
      }
      break;
    }
    case "zone":
      if (d.action === "deleted") state.zones.delete(d.zone_id);
      else if (d.zone) state.zones.set(d.zone_id, d.zone);
      break;
    default:
      break;
  }
}

function seen(deviceId, ts) {
  const dev = deviceId && state.devices.get(deviceId);
  if (!dev || !ts) return;
  if (!dev.last_seen || Date.parse(ts) > Date.parse(dev.last_seen)) dev.last_seen = ts;
  dev.status = "online";
}

// ---------------------------------------------------------------- actions

async function act(alertId, action, button) {
  button.disabled = true;
  try {
    const result = await api(`/api/alerts/${alertId}/${action}`, {
      method: "POST", body: JSON.stringify({ note: "" }),
    });
    state.alerts.set(alertId, { ...state.alerts.get(alertId), ...result.alert });
    if (result.command && !result.command.published) {
      say(`alert ${alertId}: device not told (${result.command.error})`);
    } else {
      say(`alert ${alertId}: ${action.replace("-", " ")} ok`);
    }
    renderAll();
  } catch (e) {
    say(`alert ${alertId}: ${e.message}`);
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderAll();
  });
}

function renderAll() {
  renderCounters();
  renderAlerts();
  drawMap();
}

function setCount(id, value, zero) {
  const el = $(id);
  el.querySelector("b").textContent = value;
  el.dataset.zero = String(zero);
}

function renderCounters() {
  const sev = { critical: 0, high: 0, medium: 0, low: 0, info: 0 };
  for (const a of state.alerts.values()) if (OPEN.has(a.status)) sev[a.severity] += 1;
  for (const [k, n] of Object.entries(sev)) setCount(`count-${k}`, n, n === 0);
  const g = { inside: 0, outside: 0, uncertain: 0, unknown: 0 };
  for (const guard of state.guards.values()) {
    const s = guard.position ? guard.position.zone_status : "unknown";
    if (s === "unzoned" || !(s in g)) g.unknown += 1;
    else g[s] += 1;
  }
  for (const [k, n] of Object.entries(g)) setCount(`count-${k}`, n, n === 0);
  const devs = [...state.devices.values()];
  const online = devs.filter((d) => d.status === "online").length;
  setCount("count-devices", `${online}/${devs.length}`, false);
  document.title = sev.critical ? `(${sev.critical}) CRITICAL · NOC Stream` : "NOC Stream";
}

function age(ts) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderAlerts() {
  const showClosed = $("show-closed").checked;
  const list = [...state.alerts.values()]
    .filter((a) => showClosed || OPEN.has(a.status))
    .sort((a, b) =>
      (OPEN.has(b.status) - OPEN.has(a.status)) ||
      ((a.status === "new") ? 0 : 1) - ((b.status === "new") ? 0 : 1) ||
      (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]) ||
      (b.alert_id - a.alert_id));
  const ol = $("alerts");
  ol.replaceChildren(...list.map(alertItem));
  $("feed-empty").hidden = list.length > 0;
}

function alertItem(a) {
  const li = el("li", "alert");
  li.dataset.alertId = a.alert_id;
  li.dataset.severity = a.severity;
  li.dataset.status = a.status;
  const top = el("div", "top");
  top.append(el("span", `badge ${a.severity}`, a.severity),
             el("span", "kind", a.alert_type.replace(/_/g, " ")),
             el("span", "age", age(a.last_seen)));
  top.lastChild.dataset.ts = a.last_seen;
  const msg = el("div", "msg", a.message || "");
  const meta = el("div", "meta");
  const where = [`source ${a.source_id}`];
  if (a.guard_id) where.push(guardName(a.guard_id));
  if (a.count > 1) where.push(`×${a.count}`);
  where.push(`#${a.alert_id}`);
  const status = el("span", "status", a.status.replace("_", " "));
  meta.append(status, document.createTextNode(` · ${where.join(" · ")}`));
  if (a.acknowledged_by) meta.append(document.createTextNode(` · ack ${a.acknowledged_by}`));
  li.append(top, msg, meta);
  if (OPEN.has(a.status) && state.me && state.me.role !== "analyst") {
    const actions = el("div", "actions");
    if (a.status === "new") actions.append(button(a, "acknowledge", "Acknowledge"));
    actions.append(button(a, "resolve", "Resolve"), button(a, "false-alarm", "False alarm"));
    li.append(actions);
  }
  return li;
}

function button(a, action, label) {
  const b = el("button", "", label);
  b.dataset.action = action;
  b.addEventListener("click", () => act(a.alert_id, action, b));
  return b;
}

function guardName(id) {
  const g = state.guards.get(id);
  return g ? g.name : `guard ${id}`;
}

// ---------------------------------------------------------------- map (canvas)

function zoneRings(z) {
  if (!z.geometry) return [];
  if (z.geometry.type === "Polygon") return z.geometry.coordinates;
  if (z.geometry.type === "MultiPolygon") return z.geometry.coordinates.flat();
  return [];
}

function bounds() {
  const pts = [];
  for (const z of state.zones.values()) {
    for (const ring of zoneRings(z)) for (const [lon, lat] of ring) pts.push([lat, lon]);
    if (z.radius_m) {
      const dLat = z.radius_m / 111320;
      const dLon = dLat / Math.max(0.1, Math.cos((z.center_lat * Math.PI) / 180));
      pts.push([z.center_lat - dLat, z.center_lon - dLon], [z.center_lat + dLat, z.center_lon + dLon]);
    }
  }
  for (const g of state.guards.values()) if (g.position) pts.push([g.position.lat, g.position.lon]);
  for (const a of state.alerts.values()) {
    if (OPEN.has(a.status) && a.lat !== null && a.lat !== undefined) pts.push([a.lat, a.lon]);
  }
  if (!pts.length) return null;
  let [s, w, n, e] = [90, 180, -90, -180];
  for (const [lat, lon] of pts) {
    s = Math.min(s, lat); n = Math.max(n, lat); w = Math.min(w, lon); e = Math.max(e, lon);
  }
  const pad = Math.max(n - s, e - w, 0.0005) * 0.08;
  return { s: s - pad, w: w - pad, n: n + pad, e: e + pad };
}

function drawMap() {
  const canvas = $("map");
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth;
  const H = canvas.clientHeight;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  drawGrid(ctx, W, H);
  const b = bounds();
  $("map-empty").hidden = !!b;
  if (!b) return;
  const kx = Math.cos((((b.s + b.n) / 2) * Math.PI) / 180);
  const scale = Math.min((W - 40) / ((b.e - b.w) * kx), (H - 40) / (b.n - b.s));
  const ox = (W - (b.e - b.w) * kx * scale) / 2;
  const oy = (H - (b.n - b.s) * scale) / 2;
  const px = (lat, lon) => [ox + (lon - b.w) * kx * scale, oy + (b.n - lat) * scale];
  const metres = (m) => (m / 111320) * scale;

  ctx.font = "12px 'DejaVu Sans', 'Liberation Sans', sans-serif";
  for (const z of state.zones.values()) {
    ctx.beginPath();
    let label = null;
    for (const ring of zoneRings(z)) {
      ring.forEach(([lon, lat], i) => {
        const [x, y] = px(lat, lon);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        if (!label || y < label[1] - 1 || (Math.abs(y - label[1]) <= 1 && x < label[0])) label = [x, y];
      });
      ctx.closePath();
    }
    if (z.radius_m) {
      const [x, y] = px(z.center_lat, z.center_lon);
      ctx.arc(x, y, Math.max(3, metres(z.radius_m)), 0, 2 * Math.PI);
      label = [x, y - metres(z.radius_m)];
    }
    ctx.fillStyle = z.active ? "rgba(61, 123, 217, 0.12)" : "rgba(132, 147, 168, 0.06)";
    ctx.strokeStyle = z.active ? COLORS.zone : COLORS.muted;
    ctx.setLineDash(z.active ? [] : [6, 4]);
    ctx.lineWidth = 1.5;
    ctx.fill("evenodd");
    ctx.stroke();
    ctx.setLineDash([]);
    if (label) {
      ctx.fillStyle = "#9fbde8";
      ctx.fillText(z.name, label[0] + 4, label[1] - 6);
    }
  }

  const now = Date.now();
  for (const a of state.alerts.values()) {
    if (!OPEN.has(a.status) || a.lat === null || a.lat === undefined) continue;
    const [x, y] = px(a.lat, a.lon);
    const phase = a.status === "new" ? (now % 1400) / 1400 : 0.5;
    ctx.strokeStyle = a.severity === "critical" ? COLORS.critical : "#ff8a1f";
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    ctx.arc(x, y, 10 + phase * 14, 0, 2 * Math.PI);
    ctx.stroke();
  }

  for (const g of state.guards.values()) {
    if (!g.position) continue;
    const p = g.position;
    const [x, y] = px(p.lat, p.lon);
    const color = COLORS[p.zone_status] || COLORS.unzoned;
    if (p.accuracy) {
      ctx.fillStyle = "rgba(227, 233, 241, 0.06)";
      ctx.beginPath();
      ctx.arc(x, y, Math.max(7, metres(p.accuracy)), 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.fillStyle = color;
    ctx.strokeStyle = "#07090d";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y, 6.5, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
    ctx.fillStyle = p.zone_status === "outside" ? COLORS.outside : COLORS.text;
    ctx.font = p.zone_status === "outside"
      ? "bold 13px 'DejaVu Sans', sans-serif" : "12px 'DejaVu Sans', sans-serif";
    ctx.fillText(g.name || `Guard ${g.guard_id}`, x + 10, y + 4);
  }
}

function drawGrid(ctx, W, H) {
  ctx.strokeStyle = "rgba(35, 45, 58, 0.55)";
  ctx.lineWidth = 1;
  for (let x = 0; x < W; x += 48) { ctx.beginPath(); ctx.moveTo(x + 0.5, 0); ctx.lineTo(x + 0.5, H); ctx.stroke(); }
  for (let y = 0; y < H; y += 48) { ctx.beginPath(); ctx.moveTo(0, y + 0.5); ctx.lineTo(W, y + 0.5); ctx.stroke(); }
}

// ---------------------------------------------------------------- chrome

function setConn(kind, label) {
  $("conn").dataset.state = kind;
  $("conn-label").textContent = label || kind.toUpperCase();
}

let sayTimer = null;
function say(text) {
  $("message").textContent = text;
  clearTimeout(sayTimer);
  sayTimer = setTimeout(() => { $("message").textContent = ""; }, 8000);
}

function flashTitle() {
  document.body.animate(
    [{ boxShadow: "inset 0 0 0 4px #ff3b3b" }, { boxShadow: "inset 0 0 0 0 transparent" }],
    { duration: 900, iterations: 2 },
  );
}

function tick() {
  const now = new Date();
  $("clock").textContent = `${now.toISOString().slice(11, 19)} UTC`;
  for (const span of document.querySelectorAll(".alert .age")) span.textContent = age(span.dataset.ts);
  if ([...state.alerts.values()].some((a) => a.status === "new" && a.lat != null)) drawMap();
}

$("show-closed").addEventListener("change", renderAlerts);
window.addEventListener("resize", scheduleRender);
setInterval(tick, 1000);
setInterval(() => {
  if (state.ws && !state.snapshotLoading) {
    api("/api/devices").then((devices) => {
      state.devices = new Map(devices.map((d) => [d.device_id, d]));
      renderCounters();
    }).catch(() => {});
  }
}, 30000);

async function start() {
  state.token = takeToken();
  if (!state.token) {
    askForToken();
    return;
  }
  state.stopped = false;
  try {
    state.me = await api("/api/me");
  } catch (e) {
    if (e.message !== "unauthorized") {
      setConn("offline", "OFFLINE");
      say(`cannot reach the API: ${e.message}`);
      setTimeout(start, 3000);
    }
    return;
  }
  $("who").textContent = `${state.me.subject} · ${state.me.role} · tenant ${state.me.tenant_id}`;
  connect();
}

tick();
start();
