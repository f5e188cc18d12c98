// ecg-monitor central station: one WebSocket of updates, one canvas per bed, no build step.
// Waveforms are drawn DELAY_S behind the newest sample so telemetry arriving once a second
// scrolls smoothly; a bed's clock is its own stream time.
"use strict";

const WIN_S = 6.0;       // seconds of waveform across a tile
const DELAY_S = 1.3;     // drawn this far behind the newest sample
const KEEP_S = 10.0;     // samples kept per bed
const MV_SPAN = 3.0;     // mV from the bottom to the top of a tile's canvas
const MAX_ALARMS = 200;  // alarm list length on the page

const view = { page: 0, per_page: 64, q: "", alarms_first: true, seq: 0 };
const beds = new Map();  // id -> {el, canvas, t: [], v: [], tEnd, recvAt, info}
let ws = null;
let ticks = 0;
window.stationStats = { ticks: 0, beds: 0, alarms: 0 };

function $(id) { return document.getElementById(id); }

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws`);
  ws.onopen = () => { setConn(true); sendView(); };
  ws.onclose = () => { setConn(false); setTimeout(connect, 1000); };
  ws.onerror = () => ws.close();
  ws.onmessage = (ev) => onTick(JSON.parse(ev.data));
}

function setConn(up) {
  const c = $("conn");
  c.textContent = up ? "live" : "disconnected: retrying";
  c.className = "conn " + (up ? "up" : "down");
}

function sendView() {
  view.seq += 1;  // ticks answering an older request must not undo this one (fast clicks)
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ view }));
}

function tileFor(b) {
  let bed = beds.get(b.id);
  if (bed) return bed;
  const el = document.createElement("div");
  el.className = "tile";
  el.dataset.bed = b.id;
  el.innerHTML = `<div class="top"><span class="bed"></span><span class="hr"></span></div>
    <canvas></canvas><div class="bottom"><span class="rhythm"></span><span class="banners"></span></div>`;
  el.querySelector(".bed").textContent = b.id;
  bed = { el, canvas: el.querySelector("canvas"), t: [], v: [], tEnd: null, recvAt: 0, info: b };
  beds.set(b.id, bed);
  return bed;
}

function onTick(m) {
  if (m.type !== "tick") return;
  ticks += 1;
  const grid = $("grid");
  const shown = new Set();
  const now = performance.now() / 1000;
  m.beds.forEach((b, i) => {
    const bed = tileFor(b);
    bed.info = b;
    shown.add(b.id);
    for (const c of b.chunks) addChunk(bed, c, now);
    updateTile(bed);
    if (grid.children[i] !== bed.el) grid.insertBefore(bed.el, grid.children[i] || null);
  });
  for (const [id, bed] of beds) {
    if (!shown.has(id)) { bed.el.remove(); beds.delete(id); }
  }
  const pages = Math.max(1, Math.ceil(m.matching / m.per_page));
  if (m.view_seq === view.seq) view.page = m.page;  // the server may clamp the page (beds left)
  $("pageinfo").textContent = `page ${m.page + 1}/${pages} · ${m.matching} of ${m.beds_total} beds`;
  $("sources").innerHTML = "";
  for (const s of m.sources) {
    const el = document.createElement("span");
    const silent = s.silent_s === null || s.silent_s > 5;
    el.className = "src" + (!s.connected || silent ? " bad" : "");
    el.textContent = `${s.url}${s.connected ? "" : " (down)"}${s.error ? ": " + s.error : ""}`;
    $("sources").appendChild(el);
  }
  for (const a of m.alarms) addAlarm(a);
  window.stationStats = { ticks, beds: beds.size, alarms: $("alarms").children.length };
}

function addChunk(bed, c, now) {
  const n = c.v.length;
  const t0 = c.t_end - n / c.fs;
  if (bed.tEnd !== null && c.t_end <= bed.tEnd) return;  // already have it
  if (bed.tEnd !== null && t0 - bed.tEnd > 0.5) { bed.t.push(t0); bed.v.push(null); }  // a gap: break the line
  for (let k = 0; k < n; k++) { bed.t.push(t0 + k / c.fs); bed.v.push(c.v[k]); }
  bed.tEnd = c.t_end;
  bed.recvAt = now;
  const keepFrom = bed.tEnd - KEEP_S;
  let drop = 0;
  while (drop < bed.t.length && bed.t[drop] < keepFrom) drop++;
  if (drop) { bed.t.splice(0, drop); bed.v.splice(0, drop); }
}

function updateTile(bed) {
  const b = bed.info;
  const el = bed.el;
  el.querySelector(".hr").innerHTML = b.hr === null ? "–" : `${b.hr} <small>bpm</small>`;
  const q = b.quality.join("/");
  el.querySelector(".rhythm").textContent = b.stale ? "no data" : `${b.rhythm} · leads ${q}`;
  const top = b.alarms.length ? b.alarms[0].priority : null;
  el.className = "tile" + (top ? " alarm-" + top : "") + (b.stale ? " stale" : "");
  const banners = el.querySelector(".banners");
  const want = b.alarms.map((a) => `${a.event}:${a.priority}`).join(",");
  if (banners.dataset.want !== want) {
    banners.dataset.want = want;
    banners.innerHTML = "";
    for (const a of b.alarms) {
      const s = document.createElement("span");
      s.className = "banner " + a.priority;
      s.dataset.event = a.event;
      s.textContent = a.event;
      banners.appendChild(s);
    }
  }
}

function draw() {
  const now = performance.now() / 1000;
  for (const bed of beds.values()) {
    const cv = bed.canvas;
    const w = cv.clientWidth, h = cv.clientHeight;
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (bed.tEnd === null || !w) continue;
    const head = Math.min(bed.tEnd, bed.tEnd + (now - bed.recvAt) - DELAY_S);
    const from = head - WIN_S;
    let mid = 0, cnt = 0;
    for (let k = 0; k < bed.v.length; k++) if (bed.v[k] !== null && bed.t[k] >= from) { mid += bed.v[k]; cnt++; }
    mid = cnt ? mid / cnt : 0;
    ctx.strokeStyle = bed.info.stale ? "#667" : "#3ee07a";
    ctx.lineWidth = 1.3;
    ctx.beginPath();
    let pen = false, drawn = 0;
    for (let k = 0; k < bed.t.length; k++) {
      const t = bed.t[k];
      if (t < from) continue;
      if (t > head) break;
      const v = bed.v[k];
      if (v === null) { pen = false; continue; }
      const x = ((t - from) / WIN_S) * w;
      const y = h / 2 - ((v - mid) / MV_SPAN) * h;
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
      drawn++;
    }
    ctx.stroke();
    bed.el.dataset.playhead = head.toFixed(3);
    bed.el.dataset.drawn = String(drawn);
  }
  requestAnimationFrame(draw);
}

function fmtTime(t) {
  return new Date(t * 1000).toISOString().substring(11, 19);
}

function addAlarm(a) {
  const li = document.createElement("li");
  li.className = `${a.priority} ${a.state}`;
  li.dataset.bed = a.id;
  li.dataset.event = a.event;
  li.dataset.state = a.state;
  const what = document.createElement("div");
  what.className = "what";
  what.textContent = `${fmtTime(a.detected)} ${a.id} ${a.event} ${a.state} (${a.priority})`;
  const why = document.createElement("div");
  why.className = "why";
  why.textContent = a.explanation;
  li.append(what, why);
  if (a.strip) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = `strip ${a.strip}`;
    img.dataset.strip = a.strip;
    let tries = 0;
    const src = `/strips/${encodeURIComponent(a.strip)}.png`;
    img.onerror = () => { if (++tries <= 10) setTimeout(() => { img.src = `${src}?try=${tries}`; }, 700); };
    img.onclick = () => openStrip(a, src);
    img.src = src;
    li.appendChild(img);
  }
  const list = $("alarms");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > MAX_ALARMS) list.removeChild(list.lastChild);
}

function openStrip(a, src) {
  $("modalTitle").textContent = `${a.id} ${a.event} ${a.state}: ${a.explanation}`;
  $("modalImg").src = src;
  $("modal").hidden = false;
}

$("close").onclick = () => { $("modal").hidden = true; };
$("modal").onclick = (e) => { if (e.target === $("modal")) $("modal").hidden = true; };
$("q").oninput = (e) => { view.q = e.target.value; view.page = 0; sendView(); };
$("alarmsFirst").onchange = (e) => { view.alarms_first = e.target.checked; sendView(); };
$("prev").onclick = () => { view.page = Math.max(0, view.page - 1); sendView(); };
$("next").onclick = () => { view.page += 1; sendView(); };
connect();
requestAnimationFrame(draw);
