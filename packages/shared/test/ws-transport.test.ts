import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { binaryFrameHead, WsTransport } from '../src/protocol/ws-transport.js';

/** Sizes on both sides of every WebSocket length encoding, and of the join threshold. */
const SIZES = [0, 1, 125, 126, 4095, 4096, 65_535, 65_536, 65_548, 1024 * 1024 + 3];

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function wsPair(t: Test): Promise<{ client: WebSocket; server: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`);
  const [server] = await accepted;
  if (client.readyState !== WebSocket.OPEN) await once(client, 'open');
  t.teardown(async () => {
    client.terminate();
    server.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  return { client, server };
}

/** Collects `count` messages a transport receives. */
function receive(transport: WsTransport, count: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  return new Promise((resolve, reject) => {
    transport.attach({
      message: (m) => {
        got.push(Buffer.from(m));
        if (got.length === count) resolve(got);
      },
      drain: () => {},
      close: (err) => reject(err ?? new Error('closed early')),
    });
  });
}

for (const from of ['client', 'server'] as const) {
  t.test(`${from} → peer: whole messages and header + body arrive intact, in order`, async (t) => {
    const pair = await wsPair(t);
    const to = from === 'client' ? 'server' : 'client';
    // ws refuses an unmasked frame from a client and a masked one from a server
    // ('MASK must be set' / 'MASK must be clear'): arriving at all proves the MASK bit.
    const sender = new WsTransport(pair[from]);
    sender.attach({ message: () => {}, drain: () => {}, close: () => {} });
    const receiver = new WsTransport(pair[to]);
    const expected: Buffer[] = [];
    for (const [i, n] of SIZES.entries()) {
      const whole = bytes(n, i);
      sender.send(whole);
      expected.push(whole);
      const head = bytes(12, 100 + i);
      const body = bytes(n, 200 + i);
      sender.sendParts(head, body);
      expected.push(Buffer.concat([head, body]));
    }
    const got = await receive(receiver, expected.length);
    t.equal(got.length, expected.length);
    for (const [i, m] of got.entries()) {
      if (!m.equals(expected[i]!)) t.fail(`message ${i} (${expected[i]!.byteLength} bytes) differs`);
    }
    t.pass('every message byte-exact');
    // The last write callbacks may run after the peer has the bytes: a ping round trip comes after them.
    await new Promise((resolve) => pair[from].once('pong', resolve).ping());
    t.equal(sender.bufferedAmount, 0, 'the send queue is empty once written');
  });
}

t.test('frame heads: lengths in 7, 16 and 64 bits; a client masks with a zero key', async (t) => {
  t.same([...binaryFrameHead(5, true)], [0x82, 0x85, 0, 0, 0, 0]);
  t.same([...binaryFrameHead(5, false)], [0x82, 0x05]);
  t.same([...binaryFrameHead(125, false)], [0x82, 125]);
  t.same([...binaryFrameHead(300, false)], [0x82, 126, 0x01, 0x2c]);
  t.same([...binaryFrameHead(65_535, true)], [0x82, 0xfe, 0xff, 0xff, 0, 0, 0, 0]);
  t.same([...binaryFrameHead(70_000, true)], [0x82, 0xff, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70, 0, 0, 0, 0]);
  t.same(
    [...binaryFrameHead(2, false, Buffer.from([7, 8]))],
    [0x82, 0x02, 7, 8],
    'with the start of the payload',
  );
});

t.test('each queued message counts what it holds in memory, not only its bytes', async (t) => {
  const pair = await wsPair(t);
  const sender = new WsTransport(pair.server);
  sender.attach({ message: () => {}, drain: () => {}, close: () => {} });
  // Within one tick the socket is corked: every message is still queued.
  const pong = Buffer.alloc(20);
  for (let i = 0; i < 10_000; i++) sender.send(pong);
  t.ok(
    sender.bufferedAmount >= 10_000 * 512,
    `10,000 PONG-sized messages count ${sender.bufferedAmount} bytes: a flood reaches maxSendQueue by its cost`,
  );
  await new Promise((resolve) => pair.server.once('pong', resolve).ping());
  t.equal(sender.bufferedAmount, 0, 'and nothing once written');
});
