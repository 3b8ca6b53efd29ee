// Things breaking under load: the relay killed outright, one tunnel
// connection cut mid-transfer, agents replaced by SIGTERM, the relay drained
// with long downloads in flight, and drains that must not wait for idle
// WebSocket and TCP connections or event streams. (tenancy-and-recovery.test.ts covers a clean
// relay restart and an in-process rolling replacement; relay-cli.test.ts a
// single in-flight download over SIGTERM.)
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { get, testServer } from '../helpers/http.js';
import { requestLoop } from '../helpers/load.js';
import { freePort, tcpBackend } from '../helpers/net.js';
import { AGENT_CLI, spawnLogged } from '../helpers/proc.js';
import { rawRequest } from '../helpers/raw-http.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { relayProcess } from '../helpers/relay-process.js';
import { h2Session, testPki } from '../helpers/tls.js';

const run = promisify(execFile);

/**
 * A backend whose /big responses send `first` bytes, then wait for release()
 * before sending the rest; other paths answer "ok".
 */
async function heldDownloads(t: Teardownable, size: number, first: number) {
  const released = deferred();
  const chunk = Buffer.alloc(64 * 1024, 'd');
  const app = await testServer(t, (req, res: ServerResponse) => {
    if (req.url !== '/big') return void res.end('ok');
    res.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(first, 'd'));
    released.promise.then(async () => {
      // The rest at the pace the client reads: a long download, with backpressure all the way.
      for (let sent = first; sent < size; sent += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
        if (!res.write(part)) await once(res, 'drain');
        if (res.destroyed) return;
      }
      res.end();
    });
  });
  return { app, release: released.resolve };
}

interface Download {
  /** Resolves once the response head and its first bytes have arrived. */
  begun: Promise<void>;
  /** Resolves with the bytes received and whether the response completed. */
  done: Promise<{ bytes: number; complete: boolean; status: number }>;
}

function download(port: number, host: string): Download {
  const begun = deferred();
  const done = new Promise<{ bytes: number; complete: boolean; status: number }>((resolve) => {
    let status = 0;
    let bytes = 0;
    // A cut connection shows as a request error (a reset) or an incomplete response (a close).
    const finish = (complete: boolean) => resolve({ bytes, complete, status });
    const req = request({ host: '127.0.0.1', port, path: '/big', headers: { host }, agent: false });
    req.on('error', () => finish(false));
    req.on('response', (res: IncomingMessage) => {
      status = res.statusCode ?? 0;
      res.on('data', (c: Buffer) => {
        if (bytes === 0) begun.resolve();
        bytes += c.length;
      });
      res.on('error', () => {});
      res.on('close', () => finish(res.complete));
    });
    req.end();
  });
  done.then(() => begun.resolve());
  return { begun: begun.promise, done };
}

t.test('relay SIGKILLed under load and started again: the agent comes back and serves', async (t) => {
  const relay = await relayProcess(t);
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const agent = await testAgent(
    t,
    relay.tunnelUrl,
    [{ id: 'app', hostnames: ['kill.example.com'], target: app.url }],
    { connections: 2 },
  );
  const load = requestLoop(t, relay.httpPort, 'kill.example.com', { workers: 4, body: 'ok' });
  await load.after(100);

  const down = once(agent, 'disconnected');
  relay.proc.child.kill('SIGKILL');
  await relay.proc.exited;
  t.equal(relay.proc.child.signalCode, 'SIGKILL');
  await down;
  await load.after(20); // requests meet a dead relay
  await load.stop();
  t.ok((load.statuses.get(0) ?? 0) > 0, `requests failed while the relay was dead (${load.summary()})`);

  const back = once(agent, 'routes');
  const again = await relayProcess(t, [], {
    http: relay.httpPort,
    tunnel: relay.tunnelPort,
    keyDir: relay.keyDir,
  });
  await back;
  while (agent.connectionCount < 2) await once(agent, 'connected');
  const after = requestLoop(t, again.httpPort, 'kill.example.com', { workers: 4, body: 'ok' });
  await after.after(200);
  await after.stop();
  t.same(after.failures, [], `after the restart every request succeeds (${after.summary()})`);
});

t.test('one agent connection cut mid-transfer: its streams fail cleanly, the others finish', async (t) => {
  const relay = await testRelay(t);
  const size = 4 * 1024 * 1024;
  const held = await heldDownloads(t, size, 256 * 1024);
  await testAgent(t, relay, [{ id: 'dl', hostnames: ['dl.example.com'], target: held.app.url }], {
    connections: 2,
  });
  const downloads = Array.from({ length: 6 }, () => download(relay.httpAddress.port, 'dl.example.com'));
  await Promise.all(downloads.map((d) => d.begun));
  const conns = [...relay.connections];
  t.same(conns.map((c) => c.inFlight).sort(), [3, 3], 'the downloads are spread over both connections');
  const victim = conns[0]!;
  const closed = once(victim.session, 'close');
  if (process.getuid?.() === 0) {
    // Abruptly, as a crash or a middlebox would: the kernel destroys the
    // agent's TCP socket (ss -K); nobody says goodbye, the relay gets a RST.
    await run('ss', ['-K', '-t', 'src', '127.0.0.1', 'sport', '=', `:${victim.remotePort}`]);
  } else {
    t.comment('not root: ending the connection at the relay instead of killing its socket');
    victim.session.destroy(new Error('cut by test'));
  }
  await closed;
  held.release();
  const results = await Promise.all(downloads.map((d) => d.done));
  const complete = results.filter((r) => r.complete && r.bytes === size);
  const cut = results.filter((r) => !r.complete);
  t.equal(complete.length, 3, 'the three downloads on the other connection completed in full');
  t.equal(cut.length, 3, 'the three on the cut connection ended with an error (the client sees a reset)');
  t.ok(
    cut.every((r) => r.status === 200 && r.bytes < size),
    'cut downloads are visibly truncated, never passed off as complete',
  );
  for (let i = 0; i < 10; i++)
    t.equal((await get(relay.httpAddress.port, 'dl.example.com', '/small')).status, 200);
});

t.test('rolling replacement of agent processes under a steady loop: zero failures', async (t) => {
  const relay = await testRelay(t);
  const held = await heldDownloads(t, 2 * 1024 * 1024, 64 * 1024);
  const app = held.app;
  const dir = await tempDir(t, 'burrow-roll-');
  await writeFile(join(dir, 'token'), await tokenFor('roller', ['roll.example.com']));
  const startAgentProcess = async () => {
    const p = spawnLogged(t, AGENT_CLI, [
      '--relay',
      tunnelUrl(relay),
      '--token-file',
      join(dir, 'token'),
      '--expose',
      `roll.example.com=${app.url}`,
      '--drain-timeout',
      '30s',
    ]);
    await p.waitFor((l) => l['msg'] === 'route active');
    return p;
  };
  const old = await startAgentProcess();
  const loop = requestLoop(t, relay.httpAddress.port, 'roll.example.com', { workers: 4, body: 'ok' });
  await loop.after(50);
  // Long downloads in flight on the old agent (the only one yet) when it is told to stop.
  const downloads = Array.from({ length: 3 }, () => download(relay.httpAddress.port, 'roll.example.com'));
  await Promise.all(downloads.map((d) => d.begun));
  await startAgentProcess();
  await loop.after(50);
  old.child.kill('SIGTERM');
  await old.waitFor((l) => l['msg'] === 'agent draining');
  await loop.after(50);
  held.release();
  const results = await Promise.all(downloads.map((d) => d.done));
  t.same(
    results.map((r) => r.complete && r.bytes === 2 * 1024 * 1024),
    [true, true, true],
    'downloads in flight on the old agent completed',
  );
  t.equal(await old.exited, 0, 'the old agent exits 0 once drained');
  await loop.after(50);
  await loop.stop();
  t.same(loop.failures, [], `zero failed requests (${loop.summary()})`);
});

t.test('relay SIGTERM with long downloads in flight: they complete, then it exits', async (t) => {
  const relay = await relayProcess(t, ['--drain-timeout', '30s']);
  const size = 8 * 1024 * 1024;
  const held = await heldDownloads(t, size, 256 * 1024);
  await testAgent(t, relay.tunnelUrl, [{ id: 'dl', hostnames: ['dl.example.com'], target: held.app.url }]);
  const downloads = Array.from({ length: 4 }, () => download(relay.httpPort, 'dl.example.com'));
  await Promise.all(downloads.map((d) => d.begun));

  let exitedFirst = false;
  let finished = 0;
  for (const d of downloads) d.done.then(() => finished++);
  relay.proc.exited.then(() => (exitedFirst = finished < downloads.length));
  relay.proc.child.kill('SIGTERM');
  await relay.proc.waitFor((l) => l['msg'] === 'relay draining');
  const late = await rawRequest(relay.httpPort, 'GET / HTTP/1.1\r\nHost: dl.example.com\r\n\r\n', 5_000);
  t.equal(late.status, 0, 'a new connection is not accepted while draining');
  held.release();
  const results = await Promise.all(downloads.map((d) => d.done));
  t.same(
    results.map((r) => r.complete && r.bytes === size),
    [true, true, true, true],
    'every 8 MiB download completed',
  );
  t.equal(await relay.proc.exited, 0, 'the relay exits 0');
  t.notOk(exitedFirst, 'and only after the downloads finished');
  t.ok(
    relay.proc.lines.some((l) => l['msg'] === 'relay stopped'),
    'a clean stop, not the drain deadline',
  );
});

t.test(
  'relay SIGTERM: a download outlasting the drain timeout is cut and the relay still exits',
  async (t) => {
    const relay = await relayProcess(t, ['--drain-timeout', '1s']);
    const held = await heldDownloads(t, 1024 * 1024, 64 * 1024); // never released
    await testAgent(t, relay.tunnelUrl, [
      { id: 'dl', hostnames: ['stuck.example.com'], target: held.app.url },
    ]);
    const stuck = download(relay.httpPort, 'stuck.example.com');
    await stuck.begun;
    relay.proc.child.kill('SIGTERM');
    t.equal(await relay.proc.exited, 0, 'the relay exits 0 after its drain timeout');
    const r = await stuck.done;
    t.notOk(r.complete, 'the unfinished download was cut, not left hanging');
    // The relay's own deadline cut it: the log says so, and does not blame the agent or the backend.
    t.match(
      relay.proc.lines.find((l) => l['msg'] === 'response cut short'),
      {
        reason: 'stream reset: Shutdown: drain timeout',
      },
    );
    t.match(
      relay.proc.lines.find((l) => l['msg'] === 'request' && l['host'] === 'stuck.example.com'),
      {
        status: 200,
        error: 'drain_timeout',
      },
    );
  },
);

/** Answers every upgrade on `server` with a 101, then echoes the connection's bytes (a WebSocket stand-in). */
function echoUpgrades(server: Server): void {
  server.on('upgrade', (_req, socket: Socket) => {
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n');
    socket.pipe(socket);
  });
}

/** Reads from `s` until `done` says what it has is whole; rejects if the connection closes first. */
function readUntil(s: Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer) => {
      text += c.toString('latin1');
      if (!done(text)) return;
      s.off('data', onData).off('close', onClose);
      resolve(text);
    };
    const onClose = () => reject(new Error(`connection closed after ${JSON.stringify(text)}`));
    s.on('data', onData).on('close', onClose);
  });
}

/** Sends `text` on an echoed connection; resolves with what came back. */
function roundTrip(s: Socket, text: string): Promise<string> {
  const echoed = readUntil(s, (got) => got.length >= text.length);
  s.write(text);
  return echoed;
}

/** Resolves when `s` closes, however (a reset included). */
function closed(s: Socket): Promise<void> {
  return new Promise((resolve) => s.once('close', () => resolve()));
}

async function dial(port: number): Promise<Socket> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/** An upgraded connection to `host` through the relay's HTTP port: the socket past the 101. */
async function upgraded(port: number, host: string): Promise<Socket> {
  const s = await dial(port);
  const head = readUntil(s, (text) => text.includes('\r\n\r\n'));
  s.write(`GET /ws HTTP/1.1\r\nHost: ${host}\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n`);
  const text = await head;
  if (!text.startsWith('HTTP/1.1 101 ')) throw new Error(`upgrade answered ${text.split('\r\n')[0]}`);
  return s;
}

/**
 * Keeps `s` busy with round trips, one after the other, until stop() (or a
 * bound on their number); stop() resolves once the last one is back, and
 * rejects if the connection closed under them.
 */
function keepBusy(s: Socket): { stop(): Promise<void> } {
  let busy = true;
  const running = (async () => {
    for (let trips = 0; busy && trips < 1_000_000; trips++) await roundTrip(s, 'ping');
  })();
  running.catch(() => {}); // reported by stop(); a test failing before it must not add an unhandled rejection
  return {
    stop() {
      busy = false;
      return running;
    },
  };
}

/**
 * Routes for raw connections through the relay at `relay`: app.example.com to
 * a backend serving held /big downloads and echoing upgrades, TCP `port` to an
 * echo backend. Resolves once both are active, with the agent.
 */
async function rawRoutes(t: Teardownable, relay: string, port: number, session?: { drainTimeout: number }) {
  const held = await heldDownloads(t, 1024 * 1024, 64 * 1024);
  echoUpgrades(held.app.server);
  const echo = await tcpBackend(t, (s) => s.pipe(s));
  const agent = await testAgent(
    t,
    relay,
    [
      { id: 'app', hostnames: ['app.example.com'], target: held.app.url },
      { id: 'db', hostnames: [], ports: [port], target: `tcp://127.0.0.1:${echo}` },
    ],
    { connections: 1, ...(session ? { session } : {}) },
  );
  while (!agent.portStatus().some((p) => p.port === port && p.status === 'active'))
    await once(agent, 'routes');
  return { held, agent };
}

/** An idle upgraded connection and an idle TCP connection, each having carried one exchange. */
async function idleConnections(t: Teardownable, httpPort: number, tcpPort: number) {
  const ws = await upgraded(httpPort, 'app.example.com');
  const tcp = await dial(tcpPort);
  t.teardown(() => {
    ws.destroy();
    tcp.destroy();
  });
  const echoed = await Promise.all([roundTrip(ws, 'hello'), roundTrip(tcp, 'hello')]);
  if (echoed.join() !== 'hello,hello') throw new Error(`echoed ${echoed.join()}`);
  return { closed: Promise.all([closed(ws), closed(tcp)]) };
}

t.test(
  'relay SIGTERM: idle WebSocket and TCP connections are closed once quiet, busy ones and downloads finish',
  async (t) => {
    const port = await freePort();
    // A drain timeout far beyond the guards below: only closing the quiet connections ends the drain in time.
    const relay = await relayProcess(t, [
      '--drain-timeout',
      '60s',
      '--tcp-ports',
      String(port),
      '--tcp-host',
      '127.0.0.1',
    ]);
    const { held } = await rawRoutes(t, relay.tunnelUrl, port);
    const idle = await idleConnections(t, relay.httpPort, port);
    const busyWs = await upgraded(relay.httpPort, 'app.example.com');
    t.teardown(() => busyWs.destroy());
    const busy = keepBusy(busyWs);
    const dl = download(relay.httpPort, 'app.example.com');
    await dl.begun;
    let downloaded = false;
    dl.done.then(() => (downloaded = true));
    let exited = false;
    relay.proc.exited.then(() => (exited = true));

    relay.proc.child.kill('SIGTERM');
    await within(15_000, idle.closed, 'the idle upgraded and TCP connections closed by the drain');
    await busy.stop();
    t.equal(await roundTrip(busyWs, 'still here'), 'still here', 'the busy connection was not cut');
    t.notOk(downloaded || exited, 'the held download, and so the relay, are still going');

    held.release();
    const r = await dl.done;
    t.ok(r.complete && r.bytes === 1024 * 1024, 'the download in flight completed');
    // Quiet now, it is closed as the idle ones were, and nothing else holds the drain.
    await within(15_000, closed(busyWs), 'the busy connection closed once quiet');
    t.equal(await within(15_000, relay.proc.exited, 'the relay exited'), 0, 'the relay exits 0');
    t.match(
      relay.proc.lines.find((l) => l['msg'] === 'drain closed quiet long-lived connections'),
      {
        connections: 3,
      },
    );
    t.ok(
      relay.proc.lines.some((l) => l['msg'] === 'relay stopped'),
      'a clean stop, not the drain deadline',
    );
  },
);

t.test(
  'agent close: idle WebSocket and TCP connections are closed once quiet, downloads finish',
  async (t) => {
    const port = await freePort();
    const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [port] } });
    // Far beyond the guards below: only closing the quiet connections ends the agent's drain in time.
    const { held, agent } = await rawRoutes(t, tunnelUrl(relay), port, { drainTimeout: 60_000 });
    const idle = await idleConnections(t, relay.httpAddress.port, port);
    const dl = download(relay.httpAddress.port, 'app.example.com');
    await dl.begun;
    let closed = false;
    const closing = agent.close().then(() => (closed = true));
    await within(15_000, idle.closed, 'the idle upgraded and TCP connections closed by the drain');
    t.notOk(closed, 'the agent waits for the download in flight');
    held.release();
    const r = await dl.done;
    t.ok(r.complete && r.bytes === 1024 * 1024, 'the download in flight completed');
    await within(15_000, closing, 'the agent drained');
  },
);

t.test('relay drain: quiet event streams are ended cleanly, over HTTP/1.1 and HTTP/2', async (t) => {
  const pki = await testPki(t);
  const dir = await mkdtemp(`${pki.dir}/certs-`);
  await pki.issue('site', ['events.example.test'], dir);
  // A drain timeout far beyond the guards below: only ending the quiet event streams ends the drain in time.
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { dir },
    drainTimeout: 60_000,
  });
  const app = await testServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    res.write('data: hello\n\n'); // and nothing more: the client waits for the next event
  });
  await testAgent(t, relay, [{ id: 'events', hostnames: ['events.example.test'], target: app.url }]);

  // HTTP/1.1 over TLS (the relay's fast path; plain HTTP redirects to HTTPS for a name with a certificate).
  const h1 = tlsConnect({
    host: '127.0.0.1',
    port: relay.tlsAddress!.port,
    servername: 'events.example.test',
    ca: pki.caPem,
    ALPNProtocols: ['http/1.1'],
  });
  h1.on('error', () => {});
  t.teardown(() => h1.destroy());
  await once(h1, 'secureConnect');
  h1.write('GET /events HTTP/1.1\r\nHost: events.example.test\r\n\r\n');
  await readUntil(h1, (text) => text.includes('data: hello\n\n'));
  let h1Rest = '';
  h1.on('data', (c: Buffer) => {
    h1Rest += c.toString('latin1');
  });
  const h1Closed = closed(h1);

  // HTTP/2 over TLS (node:http2 on the relay, the general path).
  const session = await h2Session(t, relay.tlsAddress!.port, 'events.example.test', pki.caPem);
  const stream = session.request({ ':path': '/events' });
  stream.setEncoding('utf8');
  const [headers] = (await once(stream, 'response')) as [Record<string, string>];
  t.equal(headers[':status'], 200);
  t.equal(String((await once(stream, 'data'))[0]), 'data: hello\n\n');
  let h2Ended = false;
  stream.on('end', () => {
    h2Ended = true;
  });
  stream.on('error', () => {});
  const h2Closed = once(stream, 'close');
  stream.resume();

  const stopped = relay.close();
  await within(15_000, h1Closed, 'the HTTP/1.1 event stream closed by the drain');
  t.equal(h1Rest, '0\r\n\r\n', 'HTTP/1.1: the response ends with its last chunk, not a cut');
  await within(15_000, h2Closed, 'the HTTP/2 event stream closed by the drain');
  t.ok(h2Ended, 'HTTP/2: the stream ends with END_STREAM');
  t.equal(stream.rstCode, 0, 'and no error code');
  await within(15_000, stopped, 'the relay stopped');
});
