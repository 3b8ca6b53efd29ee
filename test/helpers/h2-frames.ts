import { EventEmitter, once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import type { Teardownable } from './relay.js';

/**
 * A TCP proxy in front of an HTTP/2 server without TLS that records, in
 * order, the frames its clients send that end or reset a stream: what a
 * backend is told, which node:http2's own events blur (a reset request ends
 * its stream there too). Entries read `END_STREAM` or `RST_STREAM CODE`.
 */
export async function h2FrameRecorder(
  t: Teardownable,
  targetPort: number,
): Promise<{
  port: number;
  frames: string[];
  until: (check: (frames: string[]) => boolean) => Promise<void>;
}> {
  const frames: string[] = [];
  const recorded = new EventEmitter();
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const backend = connect(targetPort, '127.0.0.1');
    for (const s of [client, backend]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        backend.destroy();
      });
    }
    let buf = Buffer.alloc(0);
    let prefaceLeft = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    client.on('data', (chunk: Buffer) => {
      backend.write(chunk);
      buf = Buffer.concat([buf, chunk]);
      const skip = Math.min(prefaceLeft, buf.length);
      buf = buf.subarray(skip);
      prefaceLeft -= skip;
      // Frame header: 24-bit length, type, flags, 31-bit stream id (RFC 9113 §4.1).
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const [length, type, flags] = [buf.readUIntBE(0, 3), buf[3], buf[4]!];
        const endStream = (type === 0 || type === 1) && (flags & 1) !== 0;
        if (endStream) frames.push('END_STREAM');
        if (type === 3) frames.push(`RST_STREAM ${buf.readUInt32BE(9)}`);
        if (endStream || type === 3) recorded.emit('frame');
        buf = buf.subarray(9 + length);
      }
    });
    backend.on('data', (chunk: Buffer) => client.write(chunk));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  /** Resolves once `check` holds for the frames recorded so far. */
  const until = (check: (frames: string[]) => boolean) =>
    new Promise<void>((resolve) => {
      const test = () => {
        if (!check(frames)) return;
        recorded.off('frame', test);
        resolve();
      };
      recorded.on('frame', test);
      test();
    });
  return { port: (server.address() as AddressInfo).port, frames, until };
}
