// Resets and half-closes on spliced connections (TLS passthrough and
// upgrades). A backend that fails mid-connection reaches the client as a
// reset, not as a clean end: a TLS client that tolerates a missing
// close_notify, as many HTTP clients do for close-delimited bodies, would
// take the cut for the end. Half-closes travel end to end.
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { tcpBackend } from '../helpers/net.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { clientHelloFor } from '../helpers/tls.js';

/** How `socket` ends: 'reset' (ECONNRESET), or 'end' (a FIN). It reads everything. */
function ending(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.on('error', (e: NodeJS.ErrnoException) =>
      resolve(e.code === 'ECONNRESET' ? 'reset' : `error ${e.code}`),
    );
    socket.on('end', () => resolve('end'));
    socket.on('close', () => resolve('close'));
    socket.resume();
  });
}

async function passthrough(t: Teardownable, handler: (s: Socket) => void) {
  const port = await tcpBackend(t, handler);
  const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 } });
  await testAgent(
    t,
    relay,
    [{ id: 'pt', hostnames: ['pt.example.test'], target: `tls-passthrough://127.0.0.1:${port}` }],
    { connections: 1 },
  );
  const c = netConnect({ port: relay.tlsAddress!.port, host: '127.0.0.1' });
  const ended = ending(c);
  await once(c, 'connect');
  c.write(await clientHelloFor('pt.example.test'));
  return { c, ended };
}

t.test('passthrough: a backend that resets mid-connection resets the client connection', async (t) => {
  const { c, ended } = await passthrough(t, (s) => {
    let n = 0;
    s.on('data', () => {
      if (n++ === 0) s.write('partial answer');
      else s.resetAndDestroy(); // the backend dies mid-exchange
    });
  });
  await within(5_000, once(c, 'data'), 'the first bytes from the backend');
  c.write('more');
  t.equal(await within(5_000, ended, 'the client connection ends'), 'reset', 'a reset, not a clean end');
});

t.test('passthrough: a client reset reaches the backend as a reset', async (t) => {
  const backendEnded = deferred<string>();
  const { c } = await passthrough(t, (s) => {
    s.once('data', () => s.write('hi'));
    s.on('error', (e: NodeJS.ErrnoException) =>
      backendEnded.resolve(e.code === 'ECONNRESET' ? 'reset' : String(e.code)),
    );
    s.on('end', () => backendEnded.resolve('end'));
  });
  await within(5_000, once(c, 'data'), 'the first bytes from the backend');
  c.resetAndDestroy();
  t.equal(await within(5_000, backendEnded.promise, 'the backend connection ends'), 'reset');
});

const RAW_UPGRADE =
  'GET /raw HTTP/1.1\r\nHost: up.example.test\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n';
const SWITCHED = 'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: raw\r\n\r\n';

async function upgradeRelay(t: Teardownable, onUpgrade: (socket: Socket) => void) {
  const relay = await testRelay(t);
  const backend = await testServer(t, (_req, res) => res.end('plain'));
  backend.server.on('upgrade', (_req, socket: Socket) => {
    socket.on('error', () => {});
    (socket as Socket & { allowHalfOpen: boolean }).allowHalfOpen = true;
    onUpgrade(socket);
  });
  await testAgent(t, relay, [{ id: 'up', hostnames: ['up.example.test'], target: backend.url }], {
    connections: 1,
  });
  return relay;
}

t.test('upgrade: a backend that resets after the 101 resets the client connection', async (t) => {
  const relay = await upgradeRelay(t, (socket) => {
    socket.write(`${SWITCHED}partial`);
    socket.once('data', () => socket.resetAndDestroy());
  });
  const c = netConnect({ port: relay.httpAddress.port, host: '127.0.0.1' });
  const ended = ending(c);
  await once(c, 'connect');
  c.write(RAW_UPGRADE);
  await within(5_000, once(c, 'data'), 'the 101');
  c.write('x');
  t.equal(await within(5_000, ended, 'the client connection ends'), 'reset');
});

/** A half-open client that has sent RAW_UPGRADE; `text()` is all it has read so far. */
async function upgradeClient(port: number): Promise<{ c: Socket; text: () => string }> {
  const c = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  let text = '';
  c.on('data', (d: Buffer) => (text += d));
  await once(c, 'connect');
  c.write(RAW_UPGRADE);
  return { c, text: () => text };
}

t.test('upgrade: the client half-closes, the backend answers after its FIN and ends', async (t) => {
  const relay = await upgradeRelay(t, (socket) => {
    socket.write(SWITCHED);
    let got = '';
    socket.on('data', (d: Buffer) => (got += d));
    socket.on('end', () => socket.end(`echo:${got}`));
  });
  const { c, text } = await upgradeClient(relay.httpAddress.port);
  await within(5_000, once(c, 'data'), 'the 101');
  c.end('hello');
  await within(5_000, once(c, 'end'), "the backend's FIN");
  t.match(text(), /^HTTP\/1\.1 101 [\s\S]*echo:hello$/);
});

t.test('upgrade: the backend half-closes first, the client still sends', async (t) => {
  const backendGot = deferred<string>();
  const relay = await upgradeRelay(t, (socket) => {
    socket.end(`${SWITCHED}bye`);
    let got = '';
    socket.on('data', (d: Buffer) => (got += d));
    socket.on('end', () => backendGot.resolve(got));
  });
  const { c, text } = await upgradeClient(relay.httpAddress.port);
  await within(5_000, once(c, 'end'), "the backend's FIN");
  t.match(text(), /bye$/);
  c.end('late data');
  t.equal(await within(5_000, backendGot.promise, 'the client bytes and FIN at the backend'), 'late data');
});
