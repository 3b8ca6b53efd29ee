// Edge cases of the relay's public TLS side, configuration and lifecycle:
// SNI spellings, passthrough routes whose agent went away, hot reload of the
// tunnel certificate, and HTTPS connections during a graceful drain.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect } from 'node:net';
import { join } from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { stringify } from 'yaml';
import { testAgent } from '../helpers/agent.js';
import { deferred, until, within } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { get, httpsGet, testServer } from '../helpers/http.js';
import { listeningPorts, RELAY_CLI, spawnLogged } from '../helpers/proc.js';
import { type Teardownable, testKeys, testRelay } from '../helpers/relay.js';
import { h2Session, type TestPki, testPki } from '../helpers/tls.js';

/** One HTTP/1.1 request over TLS with `servername` as SNI; the status line, or the error code. */
function tlsStatus(port: number, servername: string, ca: string, host = servername): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername, ca });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
    s.on('secureConnect', () => {
      s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('end', () => resolve(text.split('\r\n')[0]!));
    });
  });
}

/** An HTTPS backend with its own certificate for `name`. */
async function tlsBackend(t: Teardownable, pki: TestPki, name: string) {
  const pair = await pki.issue('backend', [name]);
  const [cert, key] = await Promise.all([readFile(pair.certFile, 'utf8'), readFile(pair.keyFile, 'utf8')]);
  const server = createHttpsServer({ cert, key }, (_req, res) => res.end('from the backend'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port };
}

/** What an HTTP/2 request came to: "STATUS BODY", or "failed: …" when its stream failed. */
function outcome(stream: http2.ClientHttp2Stream): Promise<string> {
  return new Promise((resolve) => {
    let status = 0;
    let body = '';
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => (body += c.toString()));
    stream.on('error', (err: Error) => resolve(`failed: ${err.message}`));
    stream.on('close', () => resolve(`${status} ${body}`));
  });
}
t.test('a terminated route is served when the client spells its SNI with a trailing dot', async (t) => {
  const pki = await testPki(t);
  const a = await pki.issue('a', ['app.example.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: a.certFile, key: a.keyFile }] },
  });
  const backend = await testServer(t, (_req, res) => res.end('fine'));
  await testAgent(t, relay, [{ id: 'app', hostnames: ['app.example.test'], target: backend.url }]);
  const port = relay.tlsAddress!.port;
  t.equal(await tlsStatus(port, 'APP.example.test', pki.caPem), 'HTTP/1.1 200 OK', 'upper case SNI');
  // RFC 6066 wants no trailing dot, but clients send one for fully qualified
  // names; the SNI reader strips it when routing, so the handshake must agree.
  t.equal(
    await tlsStatus(port, 'app.example.test.', pki.caPem, 'app.example.test'),
    'HTTP/1.1 200 OK',
    'SNI with a trailing dot',
  );
});

t.test(
  'a tls-passthrough name whose agent went away is never terminated with a relay certificate',
  async (t) => {
    const pki = await testPki(t);
    // The operator's wildcard certificate happens to cover the tenant's passthrough name.
    const wild = await pki.issue('wild', ['*.example.test']);
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { pairs: [{ cert: wild.certFile, key: wild.keyFile }] },
    });
    const backend = await tlsBackend(t, pki, 'secure.example.test');
    const agent = await testAgent(t, relay, [
      {
        id: 'secure',
        hostnames: ['secure.example.test'],
        target: `tls-passthrough://127.0.0.1:${backend.port}`,
      },
    ]);
    const port = relay.tlsAddress!.port;
    t.equal(
      (await httpsGet(port, 'secure.example.test', pki.caPem)).body,
      'from the backend',
      'passed through while the agent is connected',
    );
    const offline = new Promise<void>((resolve) => {
      const check = () => {
        if (relay.routes.lookup('secure.example.test').kind === 'offline') resolve();
      };
      relay.routes.onChange(check);
      check();
    });
    await agent.close();
    await offline;
    // The relay must not decrypt what the tenant asked to be end to end: refuse instead.
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port, servername: 'secure.example.test', ca: pki.caPem });
      s.on('secureConnect', () => {
        const cn = (s as TLSSocket).getPeerCertificate().subject?.CN;
        s.destroy();
        resolve(`handshake completed with the relay's certificate for ${cn}`);
      });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(`refused: ${err.code ?? err.message}`));
    });
    t.match(outcome, /^refused/);
  },
);

t.test(
  'a reload after tunnel TLS was configured on a plain ws:// relay keeps the relay running',
  async (t) => {
    const pki = await testPki(t);
    const dir = await tempDir(t, 'burrow-edges-');
    await writeFile(join(dir, 'signing.pub'), (await testKeys()).publicPem);
    const configFile = join(dir, 'relay.yaml');
    const base = {
      'http-listen': '127.0.0.1:0',
      'tunnel-listen': '127.0.0.1:0',
      'admin-listen': '127.0.0.1:0',
      'tls-listen': 'off',
      'verify-key': [dir],
    };
    await writeFile(configFile, stringify(base));
    const relay = spawnLogged(t, RELAY_CLI, ['serve', '--config', configFile]);
    await listeningPorts(relay);
    const next = (pred: (l: Record<string, unknown>) => boolean) => {
      const seen = relay.lines.length;
      return relay.waitFor((l) => relay.lines.indexOf(l) >= seen && pred(l));
    };
    // 1. The file now asks for wss://: needs a restart, so the endpoint stays ws://.
    let done = next((l) => l['msg'] === 'config reloaded' || /reload failed/.test(String(l['msg'])));
    await writeFile(
      configFile,
      stringify({ ...base, 'tunnel-tls-cert': pki.certFile, 'tunnel-tls-key': pki.keyFile }),
    );
    relay.child.kill('SIGHUP');
    await done;
    // 2. The certificate is renewed (another pair): still nothing to apply to a ws:// endpoint.
    const renewed = await pki.issue('renewed', ['localhost']);
    done = next((l) => l['msg'] === 'config reloaded' || /reload failed/.test(String(l['msg'])));
    await writeFile(
      configFile,
      stringify({ ...base, 'tunnel-tls-cert': renewed.certFile, 'tunnel-tls-key': renewed.keyFile }),
    );
    relay.child.kill('SIGHUP');
    t.ok(await done, 'the second reload finished');
    t.equal(relay.child.exitCode, null, 'the relay is still running');
    relay.child.kill('SIGTERM');
    t.equal(await relay.exited, 0, 'and drains to exit 0');
  },
);

/** A relay terminating TLS for app.example.test, with a backend whose /held answers only when released. */
async function drainSetup(t: Teardownable) {
  const pki = await testPki(t);
  const a = await pki.issue('a', ['app.example.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: a.certFile, key: a.keyFile }] },
    httpsRedirect: false,
  });
  const held = deferred();
  const arrived = deferred();
  const backend = await testServer(t, (req, res) => {
    if (req.url === '/held') {
      arrived.resolve();
      held.promise.then(() => res.end('held'));
    } else res.end('ok');
  });
  t.teardown(() => held.resolve());
  await testAgent(t, relay, [{ id: 'app', hostnames: ['app.example.test'], target: backend.url }]);
  return { pki, relay, held, arrived, port: relay.tlsAddress!.port };
}

t.test('an idle HTTPS keep-alive connection is closed when the drain starts, not answered 503', async (t) => {
  const { pki, relay, held, arrived, port } = await drainSetup(t);
  // Client A: one request on a keep-alive connection, which then sits idle.
  const idle = tlsConnect({ host: '127.0.0.1', port, servername: 'app.example.test', ca: pki.caPem });
  t.teardown(() => idle.destroy());
  idle.on('error', () => {});
  await once(idle, 'secureConnect');
  idle.write('GET /first HTTP/1.1\r\nHost: app.example.test\r\n\r\n');
  let received = '';
  await new Promise<void>((resolve) => {
    const onData = (c: Buffer) => {
      received += c.toString();
      if (/\r\n\r\nok$/.test(received)) {
        idle.off('data', onData);
        resolve();
      }
    };
    idle.on('data', onData);
  });
  t.match(received, /^HTTP\/1\.1 200/, 'first response on the keep-alive connection');

  // Client B (plain HTTP): a request still in flight keeps the drain going.
  const inFlight = get(relay.httpAddress.port, 'app.example.test', '/held');
  await arrived.promise;
  const closing = relay.close();
  const outcome = new Promise<string>((resolve) => {
    idle.once('data', (c: Buffer) => resolve(`answered: ${c.toString().split('\r\n')[0]}`));
    idle.once('close', () => resolve('closed'));
  });
  idle.write('GET /second HTTP/1.1\r\nHost: app.example.test\r\n\r\n');
  t.equal(await outcome, 'closed', 'the client moves to a new connection instead of getting an error');
  held.resolve();
  t.equal((await inFlight).body.toString(), 'held', 'the request in flight finished');
  await closing;
});

t.test('an HTTP/1.1-over-TLS request in flight when the drain starts gets its whole response', async (t) => {
  const { pki, relay, held, arrived, port } = await drainSetup(t);
  const reply = httpsGet(port, 'app.example.test', pki.caPem, { path: '/held' }).then(
    (r) => `${r.status} ${r.body}`,
    (err: Error) => `failed: ${err.message}`,
  );
  await arrived.promise;
  const closing = relay.close();
  // The backend answers once the drain is under way.
  setImmediate(() => held.resolve());
  t.equal(await reply, '200 held');
  await closing;
});

t.test('an HTTP/2 request in flight when the drain starts gets its whole response', async (t) => {
  const { pki, relay, held, arrived, port } = await drainSetup(t);
  const session = await h2Session(t, port, 'app.example.test', pki.caPem);
  const reply = outcome(session.request({ ':path': '/held', ':authority': 'app.example.test' }));
  await arrived.promise;
  const closing = relay.close();
  setImmediate(() => held.resolve());
  t.equal(await reply, '200 held');
  await closing;
});

t.test('a drain does not wait for a TLS client that has not sent its ClientHello', async (t) => {
  const pki = await testPki(t);
  const cert = await pki.issue('hello', ['hello.edge.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
    // Both far beyond the guard below: only closing the silent connection lets the drain end in time.
    helloTimeout: 60_000,
    drainTimeout: 60_000,
  });
  const silent = connect(relay.tlsAddress!.port, '127.0.0.1');
  silent.on('error', () => {});
  t.teardown(() => silent.destroy());
  await once(silent, 'connect');
  const closed = once(silent, 'close');
  await within(10_000, relay.close(), 'the drain ended');
  await within(10_000, closed, 'the silent connection was closed');
  t.pass('drained without waiting for the ClientHello');
});

t.test(
  'an upgrade answered with an error page: the relay lets go of a client that never closes',
  async (t) => {
    const relay = await testRelay(t);
    const port = relay.httpAddress.port;
    const c = connect({ port, host: '127.0.0.1', allowHalfOpen: true }); // reads the answer, keeps its side open
    t.teardown(() => c.destroy());
    await once(c, 'connect');
    c.write(
      'GET / HTTP/1.1\r\nHost: nobody.example.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    let text = '';
    c.on('data', (d: Buffer) => {
      text += d.toString();
    });
    await once(c, 'end');
    t.match(text, /^HTTP\/1\.1 404 /);
    // An upgrade socket has no timer of its own: without one, this process would hold it for ever.
    const held = () => {
      const out = execFileSync('ss', ['-tnpH', `( sport = :${port} and dport = :${c.localPort} )`], {
        encoding: 'utf8',
      });
      return out.includes(`pid=${process.pid},`);
    };
    await until(async () => !held(), 'the relay closing its side', 15_000);
    t.pass('the relay no longer holds the connection');
  },
);

t.test('HTTP/2 requests accepted just before a drain starts reach their agent', async (t) => {
  const relay = await testRelay(t, { drainTimeout: 10_000 });
  const app = await testServer(t, (_req, res) => res.end('served'));
  await testAgent(t, relay, [{ id: 'race', hostnames: ['race.example.test'], target: app.url }]);
  // The drain starts while the relay is routing these requests: after they were accepted, before
  // their tunnel streams open (a turn of the event loop later).
  const lookup = relay.routes.lookup.bind(relay.routes);
  let closing: Promise<void> | undefined;
  relay.routes.lookup = (host) => {
    closing ??= Promise.resolve().then(() => relay.close());
    return lookup(host);
  };
  const session = http2.connect(`http://127.0.0.1:${relay.httpAddress.port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const ask = () => outcome(session.request({ ':path': '/', ':authority': 'race.example.test' }));
  t.same(await Promise.all([ask(), ask(), ask()]), ['200 served', '200 served', '200 served']);
  await closing;
});

t.test(
  'an HTTP/2 upload whose tunnel connection starts draining before it opens goes to another',
  async (t) => {
    const relay = await testRelay(t);
    const app = await testServer(t, (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.end(`got ${body}`));
    });
    await testAgent(t, relay, [{ id: 'up', hostnames: ['up.example.test'], target: app.url }], {
      connections: 2,
    });
    // The connection this request is routed to starts draining (GOAWAY) before its stream opens.
    const lookup = relay.routes.lookup.bind(relay.routes);
    let drained = false;
    relay.routes.lookup = (host) => {
      const found = lookup(host);
      if (found.kind === 'found' && !drained) {
        drained = true;
        queueMicrotask(() => void found.binding.target.session.goAway());
      }
      return found;
    };
    const session = http2.connect(`http://127.0.0.1:${relay.httpAddress.port}`);
    session.on('error', () => {});
    t.teardown(() => session.destroy());
    const upload = session.request({ ':method': 'POST', ':path': '/', ':authority': 'up.example.test' });
    upload.end('a body');
    const reply = await outcome(upload);
    t.ok(drained, 'a connection was drained under the request');
    t.equal(reply, '200 got a body');
  },
);

t.test('a drain is not held by an admin connection that never finishes its request head', async (t) => {
  // A drain this long would outlast the test: the stop must not wait for its deadline.
  const relay = await testRelay(t, { drainTimeout: 120_000, admin: { host: '127.0.0.1', port: 0 } });
  const socket = connect(relay.adminAddress!.port, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  socket.write('GET /metrics HTTP/1.1\r\nHost: admin\r\n');
  const closed = once(socket, 'close');
  await relay.close();
  await closed;
  t.pass('stopped, and the connection with it');
});
