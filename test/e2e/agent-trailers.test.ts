// Trailer fields come from an agent, which is a tenant, not a trusted party.
// node:http2 checks trailers only as it sends them, in a handler where a
// throw ends the process: every field the relay passes on must already be one
// it can send. A rogue agent sends what a real one never would.
import { connect as connectH2, constants, type IncomingHttpHeaders } from 'node:http2';
import { encodeFrame, FrameType, type HeaderPairs } from '@burrow/shared';
import t from 'tap';
import { within } from '../helpers/deferred.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';

/** A body record (kind 0) or a trailers record (kind 1), as docs/protocol.md §11 lays them out. */
function record(kind: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(kind, 0);
  head.writeUInt32BE(payload.byteLength, 1);
  return Buffer.concat([head, payload]);
}

const body = (text: string) => record(0, Buffer.from(text));
const trailers = (pairs: HeaderPairs) => record(1, Buffer.from(JSON.stringify(pairs)));

/** A relay, a rogue agent serving evil.example.test, and an h2c session to the relay's plain port. */
async function setup(t: Teardownable) {
  const relay = await testRelay(t);
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('rogue', ['evil.example.test']));
  await rogue.announce([{ id: 'evil', hostnames: ['evil.example.test'], backend: 'h2c' }]);
  const session = connectH2(`http://127.0.0.1:${relay.httpAddress.port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  let seen = 0;
  /** Sends one request; the rogue answers it with `head` and `bytes`, then FIN. */
  const exchange = async (head: Record<string, unknown>, bytes: Buffer) => {
    const req = session.request({ ':path': '/', ':authority': 'evil.example.test' }, { endStream: true });
    req.on('error', () => {});
    const open = await within(
      5_000,
      rogue.waitFor((f) => f.type === FrameType.Open, seen),
      'the request',
    );
    seen = rogue.frames.indexOf(open) + 1;
    const meta = JSON.parse(open.payload.toString());
    rogue.send(
      encodeFrame(FrameType.Data, open.streamId, controlMessage(head)),
      ...(bytes.byteLength ? [encodeFrame(FrameType.Data, open.streamId, bytes)] : []),
      encodeFrame(FrameType.Fin, open.streamId),
    );
    let text = '';
    let end: IncomingHttpHeaders | undefined;
    let status: unknown;
    let received: IncomingHttpHeaders | undefined;
    req.on('response', (h) => {
      status = h[':status'];
      received = h;
    });
    req.on('data', (c: Buffer) => {
      text += c.toString();
    });
    req.on('trailers', (h) => {
      end = h;
    });
    await new Promise((resolve) => req.once('close', resolve)); // after an 'error' too
    return { meta, status, head: received, text, trailers: end, rst: req.rstCode };
  };
  return { relay, rogue, exchange };
}

t.test('trailer fields HTTP/2 cannot carry are dropped; the relay stays up', async (t) => {
  const { rogue, exchange } = await setup(t);
  const r = await exchange(
    { status: 200, headers: [['content-type', 'text/plain']], trailers: true },
    Buffer.concat([
      body('all of it'),
      trailers([
        ['http2-settings', 'AAMAAABkAAQAAP__'],
        ['grpc-status', '0'],
        ['content-type', 'a'],
        ['content-type', 'b'],
        ['te', 'gzip'],
        ['constructor', 'kept'],
        ['x-bad', 'line\r\nbreak'],
        ['Content-Length', '3'],
      ]),
    ]),
  );
  t.equal(r.meta.trailers, true, 'the relay asked for a framed body');
  t.equal(r.status, 200);
  t.equal(r.text, 'all of it');
  t.match(r.trailers, { 'grpc-status': '0', 'content-type': 'a', constructor: 'kept' });
  for (const gone of ['http2-settings', 'te', 'x-bad', 'content-length'])
    t.notOk(r.trailers?.[gone], `${gone} dropped`);
  t.ok(await rogue.alive(), 'the relay still serves the tunnel');
  const again = await exchange({ status: 200, headers: [], trailers: true }, body('next'));
  t.equal(again.text, 'next', 'and the next request');
});

t.test(
  'a head that ends the response with a field repeated HTTP/2 allows once: the first goes out',
  async (t) => {
    const { rogue, exchange } = await setup(t);
    const r = await exchange(
      {
        status: 200,
        headers: [
          ['content-type', 'a'],
          ['content-type', 'b'],
        ],
        endStream: true,
      },
      Buffer.alloc(0),
    );
    t.equal(r.status, 200);
    t.equal(r.head?.['content-type'], 'a, b', 'the values joined, as HTTP/1.1 reads them');
    t.ok(await rogue.alive());
  },
);

t.test('a broken record cuts the response; the relay stays up', async (t) => {
  const { rogue, exchange } = await setup(t);
  const r = await exchange(
    { status: 200, headers: [], trailers: true },
    Buffer.concat([body('start'), record(9, Buffer.from('?'))]),
  );
  t.equal(r.status, 200, 'the head had gone out');
  t.equal(
    r.rst,
    constants.NGHTTP2_INTERNAL_ERROR,
    'the client sees the stream reset with an error, not a clean end',
  );
  t.ok(await rogue.alive());
});

t.test('a response head HTTP/2 cannot carry is a 502 for HTTP/2 clients, with no field of it', async (t) => {
  const { rogue, exchange } = await setup(t);
  const heads: HeaderPairs[] = [
    [['x-a', 'v\r\nset-cookie: evil=1']], // a downstream HTTP/1.1 hop could split the response on it
    [['x-a', 'nul\0']],
  ];
  for (const headers of heads) {
    const r = await exchange({ status: 200, headers }, body('never'));
    t.equal(r.status, 502, `${JSON.stringify(headers)}: 502`);
    t.match(r.text, /invalid response/i, 'the error page');
  }
  // What HTTP/1.1 carries and HTTP/2 does not is left out, and the response goes on.
  const repeated = await exchange(
    {
      status: 302,
      headers: [
        ['location', '/a'],
        ['location', '/b'],
        ['http2-settings', 'AAMAAABkAAQAAP__'],
      ],
    },
    body('moved'),
  );
  t.equal(repeated.status, 302);
  t.equal(repeated.head?.['location'], '/a, /b', 'the Locations joined, as HTTP/1.1 reads them');
  t.equal(repeated.head?.['http2-settings'], undefined, 'no connection-specific field');
  t.ok(await rogue.alive(), 'the relay still serves the tunnel');
});
