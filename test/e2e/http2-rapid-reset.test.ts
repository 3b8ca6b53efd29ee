// HTTP/2 requests a client resets as it sends them ("rapid reset",
// CVE-2023-44487), and more requests at once than the relay allows one
// connection, on the relay's plain port (h2c with prior knowledge). Real relay,
// agent, backend and raw HTTP/2 frames on 127.0.0.1.
import { once } from 'node:events';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { until, within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { streamKinds, testRelay } from '../helpers/relay.js';

/** One HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

const [HEADERS, RST_STREAM, SETTINGS, GOAWAY] = [0x1, 0x3, 0x4, 0x7];
const [END_STREAM, END_HEADERS, ACK] = [0x1, 0x4, 0x1];
const CANCEL = 0x8;
const REFUSED_STREAM = 0x7;

/** A GET / for `host` as an HPACK block: static-table entries and one literal, no Huffman. */
function getBlock(host: string): Buffer {
  // :method GET (2), :scheme http (6), :path / (4); :authority (1) as a literal without indexing.
  return Buffer.concat([Buffer.from([0x82, 0x86, 0x84, 0x01, host.length]), Buffer.from(host, 'latin1')]);
}

t.test('requests reset in the same write as their HEADERS open no tunnel stream', async (t) => {
  const host = 'reset.h2.test';
  let requests = 0;
  const backend = await testServer(t, (_req, res) => {
    requests++;
    res.end('ok');
  });
  const relay = await testRelay(t);
  await testAgent(t, relay, [{ id: 'reset', hostnames: [host], target: backend.url }], { connections: 1 });
  const kinds = streamKinds(relay);

  const socket = connect(relay.httpAddress.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  // 50 requests, each reset right behind its HEADERS, then one that is left to finish: all in one write.
  const pairs: Buffer[] = [];
  for (let id = 1; id <= 99; id += 2) {
    pairs.push(frame(HEADERS, END_STREAM | END_HEADERS, id, getBlock(host)));
    const code = Buffer.alloc(4);
    code.writeUInt32BE(CANCEL);
    pairs.push(frame(RST_STREAM, 0, id, code));
  }
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frame(SETTINGS, 0, 0),
      ...pairs,
      frame(HEADERS, END_STREAM | END_HEADERS, 101, getBlock(host)),
    ]),
  );
  // Wait for the response HEADERS of stream 101.
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('the relay closed the connection')));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const [type, stream] = [buf[3], buf.readUInt32BE(5) & 0x7fffffff];
        if (type === HEADERS && stream === 101) resolve();
        buf = buf.subarray(9 + buf.readUIntBE(0, 3));
      }
    });
  });
  t.same(kinds, ['http'], 'one tunnel stream, for the request that was not reset');
  t.equal(requests, 1, 'the backend saw that one request only');
});

t.test(
  'a connection gets 100 requests in progress at once; a client that opens more is refused',
  async (t) => {
    const host = 'many.h2.test';
    const held: Array<() => void> = [];
    const backend = await testServer(t, (_req, res) => held.push(() => res.end('ok')));
    t.teardown(() => {
      for (const release of held) release();
    });
    const relay = await testRelay(t);
    await testAgent(t, relay, [{ id: 'many', hostnames: [host], target: backend.url }], { connections: 1 });

    // What the plain port's HTTP/2 server tells every client in its SETTINGS.
    const polite = h2connect(`http://127.0.0.1:${relay.httpAddress.port}`);
    polite.on('error', () => {});
    t.teardown(() => polite.destroy());
    await once(polite, 'remoteSettings');
    t.equal(polite.remoteSettings.maxConcurrentStreams, 100, 'SETTINGS_MAX_CONCURRENT_STREAMS 100');
    polite.destroy();

    // Clients that pay no attention: 101 requests in one write, none of which the backend answers
    // yet; one sends them before acknowledging the relay's SETTINGS, the other after.
    for (const acked of [false, true]) {
      const socket = connect(relay.httpAddress.port, '127.0.0.1');
      t.teardown(() => socket.destroy());
      socket.on('error', () => {});
      await once(socket, 'connect');
      const requests: Buffer[] = [];
      for (let id = 1; id <= 201; id += 2)
        requests.push(frame(HEADERS, END_STREAM | END_HEADERS, id, getBlock(host)));
      const settings = [frame(SETTINGS, 0, 0), ...(acked ? [frame(SETTINGS, ACK, 0)] : [])];
      socket.write(
        Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), ...settings, ...requests]),
      );
      const resets = new Map<number, number>();
      const goaways: number[] = [];
      const answered = new Set<number>();
      let buf = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
          const [type, stream] = [buf[3], buf.readUInt32BE(5) & 0x7fffffff];
          if (type === RST_STREAM) resets.set(stream, buf.readUInt32BE(9));
          if (type === GOAWAY) goaways.push(buf.readUInt32BE(9) & 0x7fffffff);
          if (type === HEADERS) answered.add(stream);
          buf = buf.subarray(9 + buf.readUIntBE(0, 3));
        }
      });
      const closed = once(socket, 'close');
      if (acked) {
        // Past a bound it has acknowledged, the client breaks the protocol: the whole connection goes.
        await within(10_000, closed, 'the connection closes');
        t.same(goaways, [199], 'GOAWAY, and the connection closes');
        t.notOk(answered.has(201), 'the 101st request is not answered');
        continue;
      }
      await until(
        async () => held.length === 100 && resets.size === 1,
        'the backend holds 100 requests; the 101st is refused',
      );
      t.same(
        [...resets],
        [[201, REFUSED_STREAM]],
        'the 101st stream is refused (REFUSED_STREAM: safe to send again)',
      );
      for (const release of held.splice(0)) release();
      await until(async () => answered.size === 100, 'the 100 requests in progress are answered');
      t.notOk(answered.has(201), 'the 101st never is');
      t.same(goaways, [], 'and the connection stays');
      socket.destroy();
      await closed;
    }
  },
);
