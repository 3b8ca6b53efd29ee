import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { type ConnectionOptions, connect } from 'node:tls';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { HelloRecords, MAX_HELLO_BYTES, parseClientHello } from '../src/tls/client-hello.js';

/** The bytes node's TLS client sends first, captured on a plain TCP server. */
async function capture(
  t: { teardown(fn: () => unknown): void },
  options: ConnectionOptions,
): Promise<Buffer> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const client = connect({ host: '127.0.0.1', port, ...options });
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  const [socket] = await once(server, 'connection');
  const chunks: Buffer[] = [];
  for await (const chunk of socket) {
    chunks.push(chunk as Buffer);
    if (parseClientHello(Buffer.concat(chunks)).status !== 'incomplete') break;
  }
  socket.destroy();
  return Buffer.concat(chunks);
}

/** Re-frames a hello's handshake message into records of at most `size` bytes. */
function reframe(hello: Buffer, size: number): Buffer {
  const message = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < message.length; i += size) {
    const part = message.subarray(i, i + size);
    const header = Buffer.from([22, 3, 1, 0, 0]);
    header.writeUInt16BE(part.length, 3);
    out.push(header, part);
  }
  return Buffer.concat(out);
}

const cases: Array<{ name: string; options: ConnectionOptions; sni: string | undefined; alpn: string[] }> = [
  {
    name: 'SNI and ALPN h2 + http/1.1',
    options: { servername: 'App.Example.com', ALPNProtocols: ['h2', 'http/1.1'] },
    sni: 'app.example.com',
    alpn: ['h2', 'http/1.1'],
  },
  { name: 'SNI only', options: { servername: 'a.b.example.org' }, sni: 'a.b.example.org', alpn: [] },
  {
    name: 'ACME TLS-ALPN-01 validation',
    options: { servername: 'x.example.net', ALPNProtocols: ['acme-tls/1'] },
    sni: 'x.example.net',
    alpn: ['acme-tls/1'],
  },
  {
    name: 'TLS 1.2 only, no SNI (IP address)',
    options: { maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] },
    sni: undefined,
    alpn: ['http/1.1'],
  },
];

t.test(
  'real ClientHellos from node: SNI and ALPN, whole, split into records, at every truncation',
  async (t) => {
    for (const c of cases) {
      const hello = await capture(t, c.options);
      const whole = parseClientHello(hello);
      t.same(whole, { status: 'ok', hello: { serverName: c.sni, alpn: c.alpn } }, c.name);
      // Across TLS records: the same message cut into 1-, 7- and 100-byte fragments.
      for (const size of [1, 7, 100]) {
        t.same(parseClientHello(reframe(hello, size)), whole, `${c.name}: records of ${size} bytes`);
      }
      // Across TCP reads: every strict prefix asks for more, never errs.
      let wrong = 0;
      for (let cut = 0; cut < hello.length; cut++) {
        if (parseClientHello(hello.subarray(0, cut)).status !== 'incomplete') wrong++;
      }
      t.equal(wrong, 0, `${c.name}: all ${hello.length} truncations are incomplete`);
      // As a listener reads it: 1-byte records arriving a byte at a time, one reader throughout.
      const trickled = reframe(hello, 1);
      const records = new HelloRecords();
      let result = records.read(trickled.subarray(0, 1));
      let reads = 1;
      while (result.status === 'incomplete' && reads < trickled.length)
        result = records.read(trickled.subarray(0, ++reads));
      t.same(result, whole, `${c.name}: 1-byte records read a byte at a time`);
      t.equal(reads, trickled.length, `${c.name}: whole with the last byte, not before`);
    }
  },
);

t.test('malformed hellos are rejected with a reason, never thrown', async (t) => {
  const hello = await capture(t, { servername: 'app.example.com', ALPNProtocols: ['h2'] });
  const invalid = (b: Buffer) => parseClientHello(b).status === 'invalid';
  t.ok(invalid(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), 'plain HTTP');
  t.ok(invalid(Buffer.from([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5])), 'application data record');
  t.ok(invalid(Buffer.from([22, 4, 1, 0, 5, 1, 0, 0, 1, 0])), 'unknown record version');
  t.ok(invalid(Buffer.from([22, 3, 1, 0, 0])), 'empty record');
  t.ok(invalid(Buffer.from([22, 3, 1, 0x40, 0x01])), 'record over 2^14 bytes');
  t.ok(invalid(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])), 'ServerHello instead of ClientHello');
  t.ok(invalid(Buffer.from([22, 3, 1, 0, 4, 1, 0x01, 0, 0])), 'ClientHello claiming 64 KiB');
  const shortBody = Buffer.from([22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]);
  t.ok(invalid(shortBody), 'body too short for its fields');
  const trailing = Buffer.concat([hello, Buffer.from([1, 2, 3])]);
  trailing.writeUInt16BE(trailing.readUInt16BE(3) + 3, 3);
  t.ok(invalid(trailing), 'extra bytes after the hello inside its record');
  t.ok(invalid(Buffer.alloc(MAX_HELLO_BYTES + 10, 22)), 'endless data');
  // SNI names that are not hostnames, patched over "app.example.com" (same length).
  const at = hello.indexOf('app.example.com');
  for (const bad of [
    'ap..example.com',
    '-pp.example.com',
    'ap-.example.com',
    '.pp.example.com',
    'app.example..om',
  ]) {
    const patched = Buffer.from(hello);
    patched.write(bad, at, 'latin1');
    t.ok(invalid(patched), `SNI "${bad}"`);
  }

  // Every single-byte corruption: a result, never an exception; SNI never leaks garbage.
  let threw = 0;
  let badName = 0;
  for (let i = 0; i < hello.length; i++) {
    for (const xor of [0x01, 0x80, 0xff]) {
      const b = Buffer.from(hello);
      b[i] = b[i]! ^ xor;
      try {
        const r = parseClientHello(b);
        if (r.status === 'ok' && r.hello.serverName && !/^[a-z0-9.-]+$/.test(r.hello.serverName)) badName++;
      } catch {
        threw++;
      }
    }
  }
  t.equal(threw, 0, 'no corruption throws');
  t.equal(badName, 0, 'a parsed SNI name is always LDH');

  // Random bytes (seeded): rejected or incomplete, never accepted, never thrown.
  let seed = 0x2545f491;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  let accepted = 0;
  for (let n = 0; n < 2000; n++) {
    const b = Buffer.alloc(3 + (next() % 600));
    for (let i = 0; i < b.length; i++) b[i] = next() & 0xff;
    if (n % 2 === 0) b.set([22, 3, 1], 0); // half of them look like a handshake record at first
    if (parseClientHello(b).status === 'ok') accepted++;
  }
  t.equal(accepted, 0, 'random bytes are never a hello');
});

t.test('a hello read in many pieces keeps none of the buffers it was read from', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // A hello that never ends: 1-byte records up to just under the limit, each read from a new
  // buffer holding every byte so far, as a listener growing its buffer may hand them over.
  const header = Buffer.from([1, 0, 0x3e, 0x80]); // ClientHello of 16,000 bytes
  const bytes = Buffer.alloc(MAX_HELLO_BYTES - 10);
  for (let i = 0; i * 6 + 6 <= bytes.length; i++) bytes.set([22, 3, 1, 0, 1, header[i] ?? 0], i * 6);
  gc();
  const before = process.memoryUsage().arrayBuffers;
  const readers: HelloRecords[] = [];
  for (let n = 0; n < 4; n++) {
    const records = new HelloRecords();
    let status = '';
    for (let end = 6; end <= bytes.length; end += 6)
      status = records.read(Buffer.from(bytes.subarray(0, end))).status;
    t.equal(status, 'incomplete');
    readers.push(records);
  }
  // Buffers' memory is given back as the collector gets round to it: collect until it is (a
  // reader keeping slices would keep all of it, however often).
  let held = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 20 && held >= 1024 * 1024; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    held = process.memoryUsage().arrayBuffers - before;
  }
  // The buffers read add up to 4 × 22 MB; a reader keeping slices of them would hold all of it.
  t.ok(held < 1024 * 1024, `the readers hold ${held} bytes of buffers`);
  t.equal(readers.length, 4);
});
