import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import {
  connect as connectH2,
  constants,
  createServer as createH2Server,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import {
  type AddressInfo,
  connect as connectNet,
  createServer as createNetServer,
  type Socket,
} from 'node:net';
import { startAgent } from '@burrow/agent';
import type { Relay } from '@burrow/relay';
import type * as Grpc from '@grpc/grpc-js';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { fakeKube, kubeAgent, kubeService, untilKube } from '../helpers/fake-kube.js';
import { collect, grpc, grpcClient, grpcServer } from '../helpers/grpc.js';
import { h2FrameRecorder } from '../helpers/h2-frames.js';
import { get } from '../helpers/http.js';
import {
  streamKinds,
  type Teardownable,
  testLogger,
  testRelay,
  tokenFor,
  tunnelUrl,
} from '../helpers/relay.js';
import { h2Session, type TestPki, testPki } from '../helpers/tls.js';

const NAME = 'grpc.example.test';

/** A relay terminating TLS for NAME, an agent routing it to `target`. */
async function setup(t: Teardownable, pki: TestPki, target: string) {
  const cert = await pki.issue('grpc', [NAME]);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
  });
  await testAgent(t, relay, [{ id: 'grpc', hostnames: [NAME], target }]);
  return { relay, tlsPort: (relay as Relay).tlsAddress!.port };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('gRPC through a terminated hostname to an h2c:// backend', async (t) => {
  const pki = await testPki(t);
  const backend = await grpcServer(t);
  const { tlsPort } = await setup(t, pki, `h2c://127.0.0.1:${backend.port}`);
  const client = grpcClient(t, tlsPort, NAME, pki.caPem);

  await t.test('unary: message, initial and trailing metadata', async (t) => {
    const md = new grpc.Metadata();
    md.set('x-req', 'hello');
    let answer: (res: Buffer | undefined) => void = () => {};
    const response = new Promise<Buffer | undefined>((resolve) => {
      answer = resolve;
    });
    const call = client.echo(Buffer.from('ping'), md, {}, (_err, res) => answer(res));
    const [[initial], [status], res] = await Promise.all([
      once(call, 'metadata') as Promise<[Grpc.Metadata]>,
      once(call, 'status') as Promise<[Grpc.StatusObject]>,
      response,
    ]);
    t.same(initial.get('x-seen'), ['hello'], 'request metadata reached the server');
    t.equal(status.code, grpc.status.OK, status.details);
    t.same(status.metadata.get('x-trail'), ['done'], 'trailing metadata crossed the tunnel');
    t.equal(res?.toString(), 'ping', 'the message came back');
  });

  await t.test('a status without a body (trailers-only) keeps its code, message and metadata', async (t) => {
    const err = await new Promise<Grpc.ServiceError>((resolve) =>
      client.fail(Buffer.from('x'), (e) => resolve(e!)),
    );
    t.equal(err.code, grpc.status.NOT_FOUND);
    t.equal(err.details, 'no such thing');
    t.same(err.metadata.get('x-why'), ['test']);
  });

  await t.test('4 MiB each way, byte-exact', async (t) => {
    const big = randomBytes(4 * 1024 * 1024 - 64);
    const res = await new Promise<Buffer>((resolve, reject) =>
      client.echo(big, new grpc.Metadata(), {}, (e, r) => (e ? reject(e) : resolve(r!))),
    );
    t.equal(sha(res), sha(big));
  });

  await t.test('server streaming: 2000 messages in order', async (t) => {
    const got = await collect(client.count(Buffer.from('2000')));
    t.equal(got.length, 2000);
    t.ok(
      got.every((m, i) => m === String(i)),
      'in order',
    );
  });

  await t.test('client streaming: the request body streams to the end', async (t) => {
    const total = new Promise<string>((resolve, reject) => {
      const call = client.sum((e, r) => (e ? reject(e) : resolve(r!.toString())));
      for (let i = 1; i <= 500; i++) call.write(Buffer.from(String(i)));
      call.end();
    });
    t.equal(await total, String((500 * 501) / 2));
  });

  await t.test('bidirectional: each answer arrives before the next message is sent', async (t) => {
    const call = client.chat();
    for (const word of ['one', 'two', 'three']) {
      call.write(Buffer.from(word));
      const [answer] = (await once(call, 'data')) as [Buffer];
      t.equal(answer.toString(), word.toUpperCase());
    }
    call.end();
    await once(call, 'end');
  });

  await t.test('a client that cancels a call cancels it at the server', async (t) => {
    const call = client.forever(Buffer.from(''));
    const [first] = (await once(call, 'data')) as [Buffer];
    t.equal(first.toString(), 'first');
    call.on('error', () => {}); // CANCELLED, as asked
    call.cancel();
    await backend.cancelled();
    t.pass('the server saw the cancellation');
  });
});

t.test('an h2c backend that is down is UNAVAILABLE to the gRPC client', async (t) => {
  const pki = await testPki(t);
  const closed = createH2Server();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const port = (closed.address() as AddressInfo).port;
  closed.close();
  const { tlsPort } = await setup(t, pki, `h2c://127.0.0.1:${port}`);
  const client = grpcClient(t, tlsPort, NAME, pki.caPem);
  const err = await new Promise<Grpc.ServiceError>((resolve) =>
    client.echo(Buffer.from('x'), new grpc.Metadata(), {}, (e) => resolve(e!)),
  );
  t.equal(err.code, grpc.status.UNAVAILABLE, 'the relay answered 502, which gRPC reads as UNAVAILABLE');
});

t.test('HTTP/1.1 clients reach an h2c backend; its trailers come on a chunked response', async (t) => {
  const h2 = createH2Server();
  const seen: Array<Record<string, unknown>> = [];
  h2.on('stream', (stream: ServerHttp2Stream, headers) => {
    seen.push({ ...headers });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': sha(Buffer.concat(chunks)) }));
      stream.end(`got ${Buffer.concat(chunks).length} bytes`);
    });
  });
  const relay = await h2Relay(t, await listening(t, h2));
  const kinds = streamKinds(relay);
  const body = randomBytes(100_000);
  const reply = await new Promise<{ status: number; body: string; trailers: NodeJS.Dict<string> }>(
    (resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: relay.httpAddress.port,
          method: 'POST',
          path: '/upload?x=1',
          headers: { host: 'h2.example.test', te: 'trailers', 'content-length': body.length },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => {
            text += c.toString();
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, trailers: res.trailers }));
        },
      );
      req.on('error', reject);
      req.end(body);
    },
  );
  t.equal(reply.status, 200);
  t.equal(reply.body, 'got 100000 bytes');
  t.equal(reply.trailers['x-checksum'], sha(body), 'the trailer field arrived');
  t.equal(seen[0]?.[':authority'], 'h2.example.test', 'Host became :authority');
  t.equal(seen[0]?.[':path'], '/upload?x=1');
  t.equal(seen[0]?.['x-forwarded-for'], '127.0.0.1', 'forwarding fields went along');
  t.equal(seen[0]?.te, 'trailers');
  t.same(kinds, ['http'], 'an http stream: an h2c route never gets http1 ones, even for HTTP/1.1 clients');
});

t.test('an Upgrade request to an h2c backend is answered 501, not hung', async (t) => {
  const h2 = createH2Server();
  const relay = await h2Relay(t, await listening(t, h2));
  const [status, body] = await new Promise<[number, string]>((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: relay.httpAddress.port,
      headers: { host: 'h2.example.test', connection: 'upgrade', upgrade: 'websocket' },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c));
      res.on('end', () => resolve([res.statusCode ?? 0, text]));
    });
    req.on('upgrade', () => reject(new Error('upgraded')));
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 501);
  t.match(body, /speaks HTTP\/2 \(h2c\)/);
  t.notMatch(body, /127\.0\.0\.1/, 'the backend address stays in the cluster');
});

t.test('a backend allowing 2 streams per connection still gets 10 requests at once', async (t) => {
  const h2 = createH2Server({ settings: { maxConcurrentStreams: 2 } });
  const held: ServerHttp2Stream[] = [];
  const sessions = new Set<unknown>();
  h2.on('stream', (stream: ServerHttp2Stream) => {
    sessions.add(stream.session);
    held.push(stream);
    // Nothing is answered until all ten are in: only enough connections get them there.
    if (held.length === 10) {
      for (const [i, s] of held.entries()) {
        s.respond({ ':status': 200 });
        s.end(`answer ${i}`);
      }
    }
  });
  const relay = await h2Relay(t, await listening(t, h2));
  const replies = await Promise.all(
    Array.from({ length: 10 }, () => get(relay.httpAddress.port, 'h2.example.test', '/held')),
  );
  t.same(
    replies.map((r) => r.status),
    Array(10).fill(200),
    'every request answered',
  );
  t.ok(sessions.size >= 5, `spread over ${sessions.size} connections of at most 2 streams`);
});

t.test('Kubernetes: a Service port with appProtocol kubernetes.io/h2c is served as gRPC', async (t) => {
  const pki = await testPki(t);
  const cert = await pki.issue('grpc-k8s', ['grpc.example.com']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
  });
  // The Service's "ClusterIP" is another loopback address, as in the other Kubernetes tests.
  const backend = await grpcServer(t, '127.0.0.2');
  const kube = await fakeKube(t);
  const annotations = { 'burrow.dev/hostname': 'grpc.example.com' };
  const port = { portName: 'grpc', appProtocol: 'kubernetes.io/h2c' };
  kube.upsertService(kubeService('greeter', '127.0.0.2', backend.port, annotations, port));
  await kubeAgent(t, kube, tunnelUrl(relay));
  await untilKube(
    kube,
    () => kube.getService('default', 'greeter')?.metadata.annotations?.['burrow.dev/url'],
  );

  const client = grpcClient(t, (relay as Relay).tlsAddress!.port, 'grpc.example.com', pki.caPem);
  const res = await new Promise<Buffer>((resolve, reject) =>
    client.echo(Buffer.from('from the cluster'), new grpc.Metadata(), {}, (e, r) =>
      e ? reject(e) : resolve(r!),
    ),
  );
  t.equal(res.toString(), 'from the cluster', 'the call reached the Service over h2c');
});

t.test('gRPC without TLS: HTTP/2 with prior knowledge on the plain HTTP port', async (t) => {
  const backend = await grpcServer(t);
  const relay = await testRelay(t);
  await testAgent(t, relay, [{ id: 'grpc', hostnames: [NAME], target: `h2c://127.0.0.1:${backend.port}` }]);
  const client = grpcClient(t, relay.httpAddress.port, NAME);
  const res = await new Promise<Buffer>((resolve, reject) =>
    client.echo(Buffer.from('plain'), new grpc.Metadata(), {}, (e, r) => (e ? reject(e) : resolve(r!))),
  );
  t.equal(res.toString(), 'plain', 'a unary call');
  t.same(
    await collect(client.count(Buffer.from('100'))),
    Array.from({ length: 100 }, (_, i) => String(i)),
  );
  const plain = await get(relay.httpAddress.port, NAME, '/');
  t.not(plain.status, 0, 'HTTP/1.1 on the same port still answers');
});

t.test('a draining relay sends its h2c clients GOAWAY; their requests in flight finish', async (t) => {
  const h2 = createH2Server();
  const arrived = deferred<ServerHttp2Stream>();
  h2.on('stream', (stream: ServerHttp2Stream) => arrived.resolve(stream));
  const relay = await h2Relay(t, await listening(t, h2));
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  t.teardown(() => session.destroy());
  const goaway = once(session, 'goaway');
  const req = session.request({ ':path': '/slow', ':authority': 'h2.example.test' }, { endStream: true });
  const response = once(req, 'response') as Promise<[Record<string, unknown>]>;
  const backendStream = await arrived.promise;
  const closed = relay.close();
  await goaway;
  t.pass('GOAWAY came while a request was in flight');
  backendStream.respond({ ':status': 200 });
  backendStream.end('finished');
  const [headers] = await response;
  t.equal(headers[':status'], 200, 'and that request still got its answer');
  req.resume();
  await once(req, 'end');
  await closed;
});

t.test('an HTTP/1.1 request asking to upgrade to h2c gets the plain response body', async (t) => {
  const h2 = createH2Server();
  h2.on('stream', (stream: ServerHttp2Stream) => {
    stream.respond({ ':status': 200 }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    stream.end('hello');
  });
  const relay = await h2Relay(t, await listening(t, h2));
  // What `curl --http2 http://…` sends: the relay serves it as the HTTP/1.1 request it also is.
  const reply = await get(relay.httpAddress.port, 'h2.example.test', '/', {
    headers: {
      connection: 'Upgrade, HTTP2-Settings',
      upgrade: 'h2c',
      'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA',
    },
  });
  t.equal(reply.status, 200);
  t.equal(reply.body.toString(), 'hello', 'the body as the backend sent it, no record framing');
});

t.test('an h2c backend that accepts connections but never speaks HTTP/2 is a 504', async (t) => {
  const silent = createNetServer(() => {}); // accepts, reads nothing, says nothing
  const sockets = new Set<Socket>();
  silent.on('connection', (s) => sockets.add(s));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const relay = await testRelay(t);
  const agent = startAgent({
    relayUrl: tunnelUrl(relay),
    token: await tokenFor('tenant-a', ['h2.example.test']),
    routes: [
      {
        id: 'h2',
        hostnames: ['h2.example.test'],
        target: `h2c://127.0.0.1:${(silent.address() as AddressInfo).port}`,
      },
    ],
    connectTimeout: 300,
    logger: testLogger('agent'),
  });
  t.teardown(() => agent.close());
  await agent.ready();
  const reply = await get(relay.httpAddress.port, 'h2.example.test', '/');
  t.equal(reply.status, 504);
  t.match(
    reply.body.toString(),
    /did not answer in time/,
    'the connect timeout, not the wait for a response head',
  );
});

/** An HTTP/2 backend without TLS that hands each stream to `onStream`; its port. */
async function h2Backend(
  t: Teardownable,
  onStream: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void,
): Promise<number> {
  const h2 = createH2Server();
  h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on('error', () => {});
    onStream(stream, headers);
  });
  return listening(t, h2);
}

/** Starts `server` on 127.0.0.1:0, closed at teardown; its port. */
async function listening(t: Teardownable, server: Http2Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** A relay, and an agent routing h2.example.test there to the h2c backend on 127.0.0.1:`port`. */
async function h2Relay(t: Teardownable, port: number): Promise<Relay> {
  const relay = await testRelay(t);
  await testAgent(t, relay, [
    { id: 'h2', hostnames: ['h2.example.test'], target: `h2c://127.0.0.1:${port}` },
  ]);
  return relay;
}

t.test('a cancelled HTTP/2 upload reaches the backend as a reset, never as a whole request', async (t) => {
  const arrived = deferred<void>();
  const port = await h2Backend(t, (stream) => stream.once('data', () => arrived.resolve()));
  const recorder = await h2FrameRecorder(t, port);
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki, `h2c://127.0.0.1:${recorder.port}`);
  const session = await h2Session(t, tlsPort, NAME, pki.caPem);
  const req = session.request({ ':method': 'POST', ':path': '/upload', ':authority': NAME });
  req.on('error', () => {});
  req.write(Buffer.alloc(1000));
  await arrived.promise;
  req.close(constants.NGHTTP2_CANCEL);
  await recorder.until((f) => f.some((x) => x.startsWith('RST_STREAM')));
  t.same(recorder.frames, [`RST_STREAM ${constants.NGHTTP2_CANCEL}`], 'CANCEL, with no END_STREAM before it');
});

t.test('h2c on the plain port: a 1 MiB request body sent right after the preface', async (t) => {
  const port = await h2Backend(t, (stream) => {
    const hash = createHash('sha256');
    stream.on('data', (c: Buffer) => hash.update(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(hash.digest('hex'));
    });
  });
  const relay = await h2Relay(t, port);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  t.teardown(() => session.destroy());
  const body = randomBytes(1024 * 1024);
  // Sent before the relay's SETTINGS arrive: the first read holds far more than the preface.
  const req = session.request({ ':method': 'POST', ':path': '/', ':authority': 'h2.example.test' });
  req.end(body);
  let answer = '';
  req.on('data', (c: Buffer) => {
    answer += c.toString();
  });
  await once(req, 'end');
  t.equal(answer, sha(body), 'every byte arrived');
});

t.test('an h2c client that leaves cancels its stream at the backend', async (t) => {
  const arrived = deferred<ServerHttp2Stream>();
  const port = await h2Backend(t, (stream) => arrived.resolve(stream)); // never answers
  const relay = await h2Relay(t, port);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  session.on('error', () => {});
  const req = session.request({ ':path': '/wait', ':authority': 'h2.example.test' }, { endStream: true });
  req.on('error', () => {});
  const backendStream = await arrived.promise;
  session.destroy(); // the client's TCP connection goes away
  await once(backendStream, 'close');
  t.equal(backendStream.rstCode, constants.NGHTTP2_CANCEL, 'the backend stream was cancelled');
});

t.test('h2c requests for a name served over TLS get the same redirect as HTTP/1.1', async (t) => {
  const pki = await testPki(t);
  const backend = await grpcServer(t);
  const { relay } = await setup(t, pki, `h2c://127.0.0.1:${backend.port}`);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  t.teardown(() => session.destroy());
  const req = session.request({ ':path': '/x?y=1', ':authority': NAME }, { endStream: true });
  const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
  req.resume();
  t.equal(headers[':status'], 301);
  t.equal(headers.location, `https://${NAME}:${(relay as Relay).tlsAddress!.port}/x?y=1`);
});

t.test('a backend connection that drops mid-response cuts the response; it never looks whole', async (t) => {
  const port = await h2Backend(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.write('part of it', () => stream.session?.destroy()); // its TCP connection closes
  });
  const relay = await h2Relay(t, port);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const req = session.request({ ':path': '/', ':authority': 'h2.example.test' }, { endStream: true });
  req.on('error', () => {});
  let ended = false;
  let text = '';
  req.on('data', (c: Buffer) => {
    text += c.toString();
  });
  req.on('end', () => {
    ended = true;
  });
  await new Promise((resolve) => req.once('close', resolve));
  t.equal(text, 'part of it');
  t.notOk(ended, 'no END_STREAM');
  t.equal(req.rstCode, constants.NGHTTP2_INTERNAL_ERROR, 'the stream was reset with an error');
});

t.test('gRPC calls wait for their response head past the relay’s response timeout', async (t) => {
  const port = await h2Backend(t, (stream) => {
    stream.resume();
    // A watch: the server speaks with its first event, after the relay's deadline.
    setTimeout(() => {
      if (stream.destroyed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.end('event');
    }, 600);
  });
  const relay = await testRelay(t, { responseHeadTimeout: 200 });
  await testAgent(t, relay, [
    { id: 'h2', hostnames: ['h2.example.test'], target: `h2c://127.0.0.1:${port}` },
  ]);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  t.teardown(() => session.destroy());
  const call = async (contentType: string) => {
    const req = session.request({
      ':method': 'POST',
      ':path': '/burrow.test.Watch/Events',
      ':authority': 'h2.example.test',
      'content-type': contentType,
    });
    req.end(Buffer.alloc(5));
    const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
    req.resume();
    return headers[':status'];
  };
  t.equal(await call('application/grpc'), 200, 'the gRPC call got its answer');
  t.equal(await call('application/json'), 504, 'another request still has the deadline');
});

t.test('an absolute-form request target reaches an h2c backend as a path', async (t) => {
  const paths: unknown[] = [];
  const port = await h2Backend(t, (stream, headers) => {
    paths.push(headers[':path']);
    stream.respond({ ':status': 200 });
    stream.end();
  });
  const relay = await h2Relay(t, port);
  const socket = connectNet(relay.httpAddress.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.write(
    'GET http://h2.example.test/x?y=1 HTTP/1.1\r\nHost: h2.example.test\r\nConnection: close\r\n\r\n',
  );
  let reply = '';
  socket.on('data', (c: Buffer) => {
    reply += c.toString();
  });
  await once(socket, 'end');
  t.match(reply, /^HTTP\/1\.1 200 /);
  t.same(paths, ['/x?y=1']);
});

t.test('a call the backend refuses unprocessed is sent again by the gRPC client', async (t) => {
  let calls = 0;
  const port = await h2Backend(t, (stream, headers) => {
    // Refused as a server in its own rollout does: the first call, and every plain request.
    if (headers['content-type'] !== 'application/grpc' || ++calls === 1) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.concat(chunks)); // the message back, framed as it came
    });
  });
  const log = memoryLogger('info', 'burrow-relay');
  const relay = await testRelay(t, { logger: log.logger });
  await testAgent(t, relay, [
    { id: 'h2', hostnames: ['h2.example.test'], target: `h2c://127.0.0.1:${port}` },
  ]);
  const client = grpcClient(t, relay.httpAddress.port, 'h2.example.test');
  const reply = await new Promise<Buffer | undefined>((resolve, reject) =>
    client.echo(Buffer.from('again'), new grpc.Metadata(), {}, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
  t.equal(reply?.toString(), 'again', 'the call succeeded');
  t.equal(calls, 2, 'on its second attempt: the relay refused the first as the backend had');
  const refused = await log.waitFor((l) => l['msg'] === 'request' && l['refused'] === true);
  t.match(refused, { status: 503, error: 'backend_refused_stream', h2: true }, 'the access log says so');

  // Not a gRPC call: an error page says what happened.
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  t.teardown(() => session.destroy());
  const req = session.request({ ':method': 'POST', ':path': '/', ':authority': 'h2.example.test' });
  req.end('body');
  const [headers] = (await once(req, 'response')) as [Record<string, unknown>];
  req.resume();
  t.equal(headers[':status'], 503);
  t.equal(headers['x-burrow-error'], 'backend_refused_stream');
});
