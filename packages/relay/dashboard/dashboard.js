// The relay dashboard: plain browser JavaScript, no build step. It polls the
// admin API with the admin token in an Authorization header. The token comes
// from the URL fragment (#token=..., which browsers never send to a server)
// or from the login form, and is kept in sessionStorage for this tab only.

const POLL_MS = 1000;
/** Samples kept per chart: two minutes at one per second. */
const SAMPLES = 120;
const STORAGE_KEY = 'burrow-admin-token';

const $ = (id) => document.getElementById(id);
const series = { requests: [], bytes: [] };
let previous;
let timer;
/** Bumped by each start(): a poll still in flight from before must not schedule a second loop. */
let generation = 0;

function takeTokenFromFragment() {
  // Not URLSearchParams: it reads "+" as a space, and admin tokens may hold "+" (base64).
  const raw = /(?:^|&)token=([^&]*)/.exec(location.hash.slice(1))?.[1];
  let token;
  try {
    token = raw ? decodeURIComponent(raw) : undefined;
  } catch {
    token = raw;
  }
  if (token) {
    sessionStorage.setItem(STORAGE_KEY, token);
    // Out of the address bar and history, so it is not shared by copying the URL.
    history.replaceState(null, '', location.pathname + location.search);
  }
}

function showLogin(message) {
  clearTimeout(timer);
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-message').textContent = message;
  setStatus('signed out', true);
}

function setStatus(text, error = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', error);
}

class Unauthorized extends Error {}

/** What the relay accepts as an admin token (config.ts): anything else is refused, or cannot even be sent. */
const TOKEN_SHAPE = /^[\x21-\x7e]+$/;

async function api(path) {
  const token = sessionStorage.getItem(STORAGE_KEY) ?? '';
  // fetch throws on a header holding a character beyond Latin-1 (a pasted typographic quote):
  // that would read as "relay unreachable" on every poll instead of asking for the token again.
  if (!TOKEN_SHAPE.test(token)) {
    throw new Unauthorized('An admin token is printable ASCII, no spaces: enter it again.');
  }
  const res = await fetch(path, { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    throw new Unauthorized(body.message || 'the admin token was refused');
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Rows a table shows at most: a relay may route tens of thousands of names. */
const MAX_ROWS = 500;

/** Replaces a table body with one row per item; text only, never HTML from the API. */
function fillTable(id, items, columns) {
  const body = $(id).tBodies[0];
  const width = $(id).tHead.rows[0].cells.length;
  const rows = items.slice(0, MAX_ROWS).map((item) => {
    const tr = document.createElement('tr');
    for (const column of columns) {
      const td = document.createElement('td');
      td.textContent = String(column(item));
      tr.append(td);
    }
    return tr;
  });
  const note = (text) => {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = width;
    td.className = 'empty';
    td.textContent = text;
    tr.append(td);
    rows.push(tr);
  };
  if (items.length === 0) note('none');
  if (items.length > MAX_ROWS) note(`and ${items.length - MAX_ROWS} more (the admin API lists them all)`);
  body.replaceChildren(...rows);
}

function drawChart(id, values) {
  const svg = $(id);
  const max = Math.max(1, ...values);
  const step = 300 / (SAMPLES - 1);
  const offset = SAMPLES - values.length;
  const points = values.map(
    (v, i) => `${((offset + i) * step).toFixed(1)},${(58 - (v / max) * 56).toFixed(1)}`,
  );
  svg.querySelector('polyline').setAttribute('points', points.join(' '));
  svg.dataset.last = String(values.at(-1) ?? 0);
  svg.dataset.peak = String(Math.max(0, ...values));
}

function push(list, value) {
  list.push(value);
  if (list.length > SAMPLES) list.shift();
}

async function refresh() {
  const [stats, agents, routes, ports, connections, errors] = await Promise.all([
    api('/api/stats'),
    api('/api/agents'),
    api('/api/routes'),
    api('/api/ports'),
    api('/api/connections'),
    api('/api/errors'),
  ]);
  const now = performance.now();
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    const requests = Math.max(0, stats.requests - previous.stats.requests) / seconds;
    const bytes =
      Math.max(0, stats.bytesIn + stats.bytesOut - previous.stats.bytesIn - previous.stats.bytesOut) /
      seconds;
    push(series.requests, requests);
    push(series.bytes, bytes);
    $('req-rate').textContent = requests.toFixed(1);
    $('byte-rate').textContent = `${formatBytes(bytes)}/s`;
    drawChart('chart-requests', series.requests);
    drawChart('chart-bytes', series.bytes);
  }
  previous = { at: now, stats };
  $('total-requests').textContent = String(stats.requests);
  $('total-errors').textContent = String(stats.requestErrors);
  $('total-in').textContent = formatBytes(stats.bytesIn);
  $('total-out').textContent = formatBytes(stats.bytesOut);
  $('agent-count').textContent = String(stats.agents);
  $('connection-count').textContent = String(stats.connections);
  $('route-count').textContent = String(stats.routes);
  // Public TCP ports are routes too, reached by port instead of name.
  const portRoutes = ports.map((p) => ({ ...p, hostname: `TCP port ${p.port}` }));
  fillTable(
    'routes',
    [...routes, ...portRoutes],
    [(r) => r.hostname, (r) => r.subject, (r) => r.routeIds.join(', '), (r) => r.connections.length],
  );
  fillTable('agents', agents, [
    (a) => a.subject,
    (a) => a.connections,
    (a) => a.hostnames.join(', '),
    (a) => new Date(a.connectedSince).toLocaleString(),
  ]);
  fillTable('connections', connections, [
    (c) => c.id,
    (c) => c.subject,
    (c) => c.remoteAddress,
    (c) => `${c.rttMs.toFixed(1)} ms`,
    (c) => c.streams,
    (c) => formatBytes(c.bytesIn),
    (c) => formatBytes(c.bytesOut),
    (c) => (c.draining ? 'draining' : 'up'),
  ]);
  fillTable('errors', errors, [
    (e) => new Date(e.time).toLocaleTimeString(),
    (e) => e.route || '(no route)',
    (e) => e.method,
    (e) => e.status,
    (e) => e.reason,
  ]);
  setStatus(`updated ${new Date().toLocaleTimeString()}`);
}

async function loop(mine) {
  try {
    await refresh();
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem(STORAGE_KEY);
      showLogin(err.message);
      return;
    }
    setStatus(`relay unreachable: ${err.message}`, true);
  }
  if (mine !== generation) return;
  timer = setTimeout(() => loop(mine), POLL_MS);
}

function start() {
  clearTimeout(timer);
  generation += 1;
  $('login').hidden = true;
  $('main').hidden = false;
  setStatus('loading…');
  loop(generation);
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(STORAGE_KEY, $('token').value.trim());
  $('token').value = '';
  start();
});

window.addEventListener('hashchange', () => {
  if (!new URLSearchParams(location.hash.slice(1)).has('token')) return;
  takeTokenFromFragment();
  start();
});

takeTokenFromFragment();
if (sessionStorage.getItem(STORAGE_KEY)) start();
else showLogin("Enter the relay's admin token (or open this page as /#token=...).");
