// HTTP/2 requests a client resets as it sends them ("rapid reset",
// CVE-2023-44487), on the relay's plain port (h2c with prior knowledge), and a
// tunnel whose agent reads slower than streams are opened. Real relay, agent,
// backend and raw HTTP/2 frames on 127.0.0.1.
import { once } from 'node:events';
import { connect } from 'node:net';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
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

const [HEADERS, RST_STREAM, SETTINGS] = [0x1, 0x3, 0x4];
const [END_STREAM, END_HEADERS] = [0x1, 0x4];
const CANCEL = 0x8;

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
