import { connect, type Socket } from 'node:net';

export interface RawReply {
  /** Status code of the first response, 0 if none came. */
  status: number;
  /** The whole response head and body, latin1. */
  text: string;
  /** The server closed the connection (rather than the response simply being complete). */
  closed: boolean;
}

/**
 * Writes raw bytes to 127.0.0.1:port and reads one HTTP response (head plus
 * Content-Length body) or until the server closes (with `untilClose`, only
 * that). Bounded: after `limit` ms resolves with what it has (status 0 if no
 * response came, closed false).
 */
export function rawRequest(
  port: number,
  data: string | Buffer | ((socket: Socket) => void),
  limit = 15_000,
  untilClose = false,
): Promise<RawReply> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = buf.toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), text, closed });
    };
    const timer = setTimeout(() => finish(false), limit);
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1 || untilClose) return;
      const length = Number(
        /\r\ncontent-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'))?.[1] ?? 0,
      );
      if (buf.length >= end + 4 + length) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', () => {}); // a reset after the response is the server closing: 'close' follows
    if (typeof data === 'function') data(socket);
    else socket.write(data);
  });
}
