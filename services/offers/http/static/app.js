// The execution broker dashboard: plain JavaScript, no build step, no third-party code.
// Credentials stay in memory only; every API call sends them as an Authorization header, and the
// live event stream (EventSource cannot send headers) uses a short-lived token from POST /events/token.
"use strict";

const PHASES = ["OFFERED", "ACCEPTED", "REJECTED", "EXPIRED", "WAITING", "PREPARING", "AVAILABLE",
  "RUNNING", "RELEASING", "COMPLETED", "FAILED", "CANCELLED"];
const UPDATE_KIND = "uri:enum-value-update";

const state = { auth: null, me: null, offerset: null, selected: null, source: null, sessions: new Map(), latest: new Map() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function phaseBadge(phase) { return el("span", { class: "phase " + phase, "data-phase": phase }, phase); }
function short(id) { return id ? id.slice(0, 8) : ""; }
function when(text) { return text ? text.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : ""; }

class ApiError extends Error {
  constructor(status, body) {
    const messages = (body && body.messages) || [];
    super(messages.map((m) => m.message || m.template).join("; ") || ("HTTP " + status));
    this.status = status;
    this.messages = messages;
  }
}

async function api(method, path, body, contentType) {
  const headers = { "Accept": "application/json", "X-Requested-With": "eb-dashboard" };
  if (state.auth) headers["Authorization"] = state.auth;
  const init = { method, headers };
  if (body !== undefined) {
    init.body = body;
    headers["Content-Type"] = contentType || "application/json";
    // A 200 with the document instead of a 303 redirect (fetch would follow it with a GET).
    headers["Prefer"] = "return=representation";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { messages: [{ message: text }] }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- login ---------------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const user = $("username").value;
  const password = $("password").value;
  state.auth = "Basic " + btoa(unescape(encodeURIComponent(user + ":" + password)));
  $("login-error").textContent = "";
  try {
    state.me = await api("GET", "/whoami");
  } catch (error) {
    state.auth = null;
    $("login-error").textContent = error.status === 401 ? "Wrong user name or password." : error.message;
    return;
  }
  $("password").value = "";
  $("login-box").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = "signed in as " + state.me.username + (state.me.admin ? " (admin)" : "");
  await refreshSessions();
  connectEvents();
}

function logout() {
  state.auth = null;
  state.me = null;
  if (state.source) state.source.close();
  state.source = null;
  setLive(false);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login-box").hidden = false;
  $("whoami").textContent = "";
}

// -- live events ---------------------------------------------------------------------------------

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = "badge " + (on ? "on" : "off");
}

async function connectEvents() {
  if (!state.auth) return;
  let token;
  try {
    token = (await api("POST", "/events/token")).token;
  } catch (error) {
    setTimeout(connectEvents, 3000);
    return;
  }
  const source = new EventSource("/events?token=" + encodeURIComponent(token));
  state.source = source;
  source.onopen = () => setLive(true);
  source.addEventListener("session", (message) => onSessionEvent(JSON.parse(message.data)));
  source.onerror = () => {
    // The token may have expired: close and reconnect with a fresh one.
    setLive(false);
    source.close();
    if (state.source === source) setTimeout(connectEvents, 2000);
  };
}

// An event can arrive before the read model behind GET has recorded it: refresh until it has.
let refreshTimers = [];
function onSessionEvent(event) {
  state.latest.set(event.session_id, event.phase);
  const known = state.sessions.get(event.session_id);
  if (known) {
    known.phase = event.phase;
    renderSessions();
  }
  if (state.selected === event.session_id) setDetailPhase(event.phase);
  refreshTimers.forEach(clearTimeout);
  refreshTimers = [150, 700, 2000].map((delay) => setTimeout(async () => {
    await refreshSessions();
    if (state.offerset) await refreshOfferset();
    if (state.selected) await showSession(state.selected);
  }, delay));
}

function setDetailPhase(phase) {
  $("detail-phase").replaceWith(Object.assign(phaseBadge(phase), { id: "detail-phase" }));
}

// The newest of the read model's phase and the last event's phase (phases only move forward).
function currentPhase(session) {
  const latest = state.latest.get(session.meta.uuid);
  if (!latest || latest === session.phase) return session.phase;
  return PHASES.indexOf(latest) > PHASES.indexOf(session.phase) ? latest : session.phase;
}

// -- submitting ----------------------------------------------------------------------------------

async function loadExample() {
  const response = await fetch("/dashboard/example");
  $("request-text").value = await response.text();
}

async function submit() {
  const text = $("request-text").value.trim();
  if (!text) { $("submit-status").textContent = "Paste a request first."; return; }
  const type = text.startsWith("{") ? "application/json" : "application/yaml";
  const direct = $("direct").checked;
  $("submit").disabled = true;
  $("submit-status").textContent = "submitting…";
  try {
    if (direct) {
      const session = await api("POST", "/direct", text, type);
      $("submit-status").textContent = "running session " + short(session.meta.uuid);
      await refreshSessions();
      showSession(session.meta.uuid);
    } else {
      state.offerset = await api("POST", "/requests", text, type);
      $("submit-status").textContent = "offer set " + state.offerset.result;
      renderOfferset();
      await refreshSessions();
    }
  } catch (error) {
    $("submit-status").textContent = "";
    if (error.status === 400 && error.messages.length === 0) {
      $("submit-status").textContent = "no offer";
    }
    showError($("submit-status"), error);
  } finally {
    $("submit").disabled = false;
  }
}

function showError(node, error) {
  node.textContent = "";
  node.append(el("span", { class: "error" }, "HTTP " + error.status + ": " + error.message));
}

// -- offer sets ----------------------------------------------------------------------------------

async function refreshOfferset() {
  if (!state.offerset) return;
  state.offerset = await api("GET", "/offersets/" + state.offerset.meta.uuid);
  renderOfferset();
}

function renderMessages(list, messages) {
  list.textContent = "";
  for (const m of messages || []) list.append(el("li", { class: m.level }, m.message || m.template));
}

function renderOfferset() {
  const set = state.offerset;
  $("offerset-box").hidden = false;
  $("offerset-id").textContent = set.meta.uuid;
  $("offerset-result").replaceWith(Object.assign(phaseBadge(set.result), { id: "offerset-result" }));
  renderMessages($("offerset-messages"), set.meta.messages);
  const body = $("offers").querySelector("tbody");
  body.textContent = "";
  (set.offers || []).forEach((offer, index) => {
    const id = offer.meta.uuid;
    const available = (offer.schedule && offer.schedule.available) || {};
    const compute = offer.compute || {};
    const legal = legalPhases(offer);
    const actions = el("td", {},
      legal.includes("ACCEPTED") ? el("button", { class: "accept", "data-session": id, onclick: () => update(id, "ACCEPTED") }, "Accept") : null,
      " ",
      legal.includes("REJECTED") ? el("button", { class: "reject", "data-session": id, onclick: () => update(id, "REJECTED") }, "Reject") : null);
    body.append(el("tr", { class: "clickable", "data-session": id, onclick: (e) => { if (e.target.tagName !== "BUTTON") showSession(id); } },
      el("td", {}, index), el("td", {}, el("code", {}, short(id))), el("td", {}, phaseBadge(offer.phase)),
      el("td", {}, when((available.start || "").split("/")[0])), el("td", {}, available.duration || ""),
      el("td", {}, (compute.cores || {}).min ?? ""), el("td", {}, (compute.memory || {}).min ?? ""),
      el("td", {}, when(offer.expires)), actions));
  });
}

function legalPhases(session) {
  const options = (session.meta && session.meta.options) || [];
  const phase = options.find((o) => o.path === "phase");
  return phase ? phase.values : [];
}

async function update(sessionId, phase) {
  try {
    await api("POST", "/sessions/" + sessionId, JSON.stringify({ kind: UPDATE_KIND, path: "phase", value: phase }));
  } catch (error) {
    alert("Update refused: " + error.message);
  }
  await refreshOfferset();
  await refreshSessions();
  if (phase === "ACCEPTED" || state.selected === sessionId) showSession(sessionId);
}

// -- sessions ------------------------------------------------------------------------------------

async function refreshSessions() {
  const phase = $("phase-filter").value;
  const data = await api("GET", "/sessions" + (phase ? "?phase=" + phase : ""));
  state.sessions = new Map(data.sessions.map((s) => [s.meta.uuid, s]));
  renderSessions();
}

function renderSessions() {
  const body = $("sessions").querySelector("tbody");
  body.textContent = "";
  for (const session of state.sessions.values()) {
    const id = session.meta.uuid;
    body.append(el("tr", { class: "clickable" + (id === state.selected ? " selected" : ""), "data-session": id, onclick: () => showSession(id) },
      el("td", {}, el("code", {}, short(id))), el("td", {}, session.meta.name || ""),
      el("td", {}, phaseBadge(currentPhase(session))), el("td", {}, when(session.meta.created)),
      el("td", {}, when(session.meta.modified))));
  }
}

let showing = 0;
async function showSession(id) {
  const ticket = ++showing;
  state.selected = id;
  renderSessions();
  let session, history;
  try {
    [session, history] = await Promise.all([api("GET", "/sessions/" + id), api("GET", "/sessions/" + id + "/events")]);
  } catch (error) {
    return;
  }
  if (ticket !== showing) return;
  $("detail").hidden = false;
  $("detail-id").textContent = id;
  setDetailPhase(currentPhase(session));
  const actions = $("detail-actions");
  actions.textContent = "";
  for (const phase of legalPhases(session)) {
    const cls = phase === "ACCEPTED" ? "accept" : phase === "CANCELLED" ? "cancel" : "reject";
    const label = { ACCEPTED: "Accept", REJECTED: "Reject", CANCELLED: "Cancel" }[phase] || phase;
    actions.append(el("button", { class: cls, onclick: () => update(id, phase) }, label));
  }
  const trace = $("detail-trace");
  trace.textContent = "";
  if (history.trace_url) {
    trace.append("Trace: ", el("a", { href: history.trace_url, target: "_blank", rel: "noopener", id: "trace-link" }, history.trace_id), " (Jaeger)");
  }
  const timeline = $("timeline");
  timeline.textContent = "";
  for (const event of history.events) {
    const item = el("li", {}, el("span", { class: "at" }, when(event.at)), phaseBadge(event.phase));
    for (const m of event.messages || []) item.append(" ", el("span", { class: "hint" }, m.message || m.template));
    timeline.append(item);
  }
  renderMessages($("detail-messages"), session.meta.messages);
  const connectors = $("connectors");
  connectors.textContent = "";
  for (const c of session.connectors || []) {
    const link = /^https?:/.test(c.location || "") ? el("a", { href: c.location, target: "_blank", rel: "noopener" }, c.location) : el("code", {}, c.location);
    connectors.append(el("li", {}, (c.kind || "connector").replace("urn:execution-broker:connectors/", ""), " ", c.status ? "[" + c.status + "] " : "", link));
  }
  if (!connectors.children.length) connectors.append(el("li", { class: "hint" }, "none yet"));
}

// -- start ---------------------------------------------------------------------------------------

for (const phase of PHASES) $("phase-filter").append(el("option", { value: phase }, phase));
$("phase-filter").addEventListener("change", refreshSessions);
$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
$("load-example").addEventListener("click", loadExample);
$("submit").addEventListener("click", submit);
