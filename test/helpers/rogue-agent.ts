/**
 * A hand-driven agent for hostile-tunnel tests: a real WebSocket to the
 * relay's tunnel endpoint with a valid token, whose frames the test writes
 * byte by byte. Everything the relay sends back is decoded into `frames`.
 */
import { EventEmitter, once } from 'node:events';
import {
  type AnnouncedPort,
  type AnnouncedRoute,
  decodeFrame,
  encodeFrame,
  encodeHello,
  encodePing,
  encodeWindow,
  type Frame,
  FrameType,
  type Hello,
  type PortResult,
  TUNNEL_PATH,
  TUNNEL_SUBPROTOCOL,
} from '@burrow/shared';
import { WebSocket } from 'ws';
import type { Rng } from '../../packages/shared/test/helpers/prng.js';
import type { Teardownable } from './relay.js';

/** Largest frame payload any peer may advertise (docs/protocol.md): decode what the relay sends with it. */
const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024 - 12;

const ROGUE_HELLO: Hello = {
  version: 1,
  maxConcurrentStreams: 100,
  initialWindow: 256 * 1024,
  maxFramePayload: 64 * 1024,
  maxMetadata: 32 * 1024,
};

/** Bytes of one control message: u32 length, then JSON (docs/protocol.md). */
export function controlMessage(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.byteLength);
  return Buffer.concat([head, body]);
}

export class RogueAgent extends EventEmitter<{ frame: [Frame] }> {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  /** The WebSocket close, whenever it happens: code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  isClosed = false;
  #pings = 0;

  private constructor(ws: WebSocket) {
    super();
    this.ws = ws;
    this.closed = once(ws, 'close').then(([code, reason]) => {
      this.isClosed = true;
      return { code: code as number, reason: String(reason) };
    });
    ws.on('error', () => {}); // the relay cutting us off is what these tests provoke
    ws.on('message', (data: Buffer) => {
      let frame: Frame;
      try {
        frame = decodeFrame(data, MAX_FRAME_PAYLOAD);
      } catch {
        return; // the relay only sends valid frames; nothing to learn from a decode failure here
      }
      this.frames.push(frame);
      this.emit('frame', frame);
    });
  }

  /** Connects and exchanges HELLOs; the WebSocket is terminated at teardown. */
  static async connect(
    t: Teardownable,
    tunnelUrl: string,
    token: string,
    hello: Partial<Hello> = {},
  ): Promise<RogueAgent> {
    const ws = new WebSocket(tunnelUrl + TUNNEL_PATH, TUNNEL_SUBPROTOCOL, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    const rogue = new RogueAgent(ws);
    t.teardown(() => ws.terminate());
    await once(ws, 'open');
    rogue.send(encodeHello({ ...ROGUE_HELLO, ...hello }));
    await rogue.waitFor((f) => f.type === FrameType.Hello);
    return rogue;
  }

  send(...messages: Buffer[]): void {
    for (const m of messages) if (this.ws.readyState === WebSocket.OPEN) this.ws.send(m);
  }

  /**
   * Opens the control stream (id 1) and announces `routes`, with `fields`
   * added to the message; resolves with the relay's announce-result.
   */
  async announce(
    routes: AnnouncedRoute[],
    ports?: AnnouncedPort[],
    fields: Record<string, unknown> = {},
  ): Promise<{ type: string; routes: Array<{ status: string }>; ports?: PortResult[]; seq?: unknown }> {
    let next = this.frames.length;
    // In frames of 60 KiB, under the relay's largest (the stream's window must still hold it all).
    const message = controlMessage({ type: 'announce', routes, ...(ports ? { ports } : {}), ...fields });
    const frames = [encodeFrame(FrameType.Open, 1, Buffer.from('{"kind":"control"}'))];
    for (let at = 0; at < message.length; at += 60 * 1024)
      frames.push(encodeFrame(FrameType.Data, 1, message.subarray(at, at + 60 * 1024)));
    this.send(...frames);
    let buf = Buffer.alloc(0);
    for (;;) {
      const f = await this.waitFor((f) => f.type === FrameType.Data && f.streamId === 1, next);
      next = this.frames.indexOf(f, next) + 1;
      buf = Buffer.concat([buf, f.payload]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const message = JSON.parse(buf.subarray(4, 4 + len).toString());
        buf = buf.subarray(4 + len);
        if (message.type === 'announce-result') return message;
      }
    }
  }

  /** The first frame (already received or still to come) that matches; rejects if the relay closes first. */
  waitFor(match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    const seen = this.frames.slice(from).find(match);
    if (seen) return Promise.resolve(seen);
    if (this.isClosed) return Promise.reject(new Error('the relay closed the tunnel'));
    return new Promise((resolve, reject) => {
      const onFrame = (f: Frame) => {
        if (!match(f)) return;
        this.off('frame', onFrame);
        resolve(f);
      };
      this.on('frame', onFrame);
      this.closed.then(() => {
        this.off('frame', onFrame);
        reject(new Error('the relay closed the tunnel'));
      });
    });
  }

  /**
   * True if the relay still answers a PING sent now (it has processed
   * everything sent before), false once it has closed the tunnel.
   */
  async alive(): Promise<boolean> {
    if (this.isClosed) return false;
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(0xbadc0de, 0);
    payload.writeUInt32BE(++this.#pings, 4);
    const from = this.frames.length;
    this.send(encodePing(FrameType.Ping, payload));
    return Promise.race([
      this.waitFor((f) => f.type === FrameType.Pong && f.payload.equals(payload), from).then(
        () => true,
        () => false,
      ),
      this.closed.then(() => false),
    ]);
  }
}

/** One frame from a seeded mix of random bytes, random frames and mutations of valid ones. */
export function hostileFrame(rng: Rng): Buffer {
  const valid = () =>
    rng.pick([
      encodeFrame(FrameType.Data, 1, controlMessage({ type: 'announce', routes: [] })),
      encodeFrame(FrameType.Open, 3 + 2 * rng.int(50), Buffer.from('{"kind":"control"}')),
      encodeWindow(1, 1 + rng.int(1 << 16)),
      encodeFrame(FrameType.Fin, 1),
      encodeFrame(FrameType.Ping, 0, rng.bytes(8)),
      encodeHello({
        version: 1,
        maxConcurrentStreams: 10,
        initialWindow: 65536,
        maxFramePayload: 65536,
        maxMetadata: 4096,
      }),
    ]);
  switch (rng.int(5)) {
    case 0:
      return rng.bytes(rng.int(64));
    case 1:
      return encodeFrame(rng.int(12), rng.u32(), rng.bytes(rng.int(48)), rng.int(256));
    case 2: {
      const f = Buffer.from(valid());
      for (let i = 1 + rng.int(3); i > 0; i--) f[rng.int(f.length)] = rng.int(256);
      return f;
    }
    case 3: {
      const f = valid();
      return f.subarray(0, rng.int(f.length));
    }
    default: {
      const f = Buffer.from(valid());
      f.writeUInt32BE(rng.u32() % (f.length * 4), 8); // a length field that lies
      return f;
    }
  }
}
