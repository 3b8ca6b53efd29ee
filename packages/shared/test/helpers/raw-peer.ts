import { EventEmitter, once } from 'node:events';
import { MAX_FRAME_PAYLOAD } from '../../src/protocol/config.js';
import { decodeFrame, decodeGoAway, decodeRst } from '../../src/protocol/decode.js';
import { encodeHello, encodePing } from '../../src/protocol/encode.js';
import { type Frame, FrameType, type GoAway, type Hello, type Rst } from '../../src/protocol/frame.js';
import { type MemoryTransport, memoryTransportPair } from '../../src/protocol/memory-transport.js';
import { Session, type SessionOptions } from '../../src/protocol/session.js';
import type { Stream } from '../../src/protocol/stream.js';

export const PEER_HELLO: Hello = {
  version: 1,
  maxConcurrentStreams: 100,
  initialWindow: 64 * 1024,
  maxFramePayload: 64 * 1024,
  maxMetadata: 16 * 1024,
};

/**
 * Frames reach a session on later macrotasks: anything it threw would surface
 * as an uncaught exception, not as a failed assertion. Records them (for the
 * rest of the process) so a test can assert explicitly that none escaped; tap
 * fails the file on them anyway.
 */
export function recordEscaped(): unknown[] {
  const escaped: unknown[] = [];
  process.on('uncaughtExceptionMonitor', (err) => escaped.push(err));
  return escaped;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * A real Session on one end of a memory pair; the other end is driven by hand.
 * `send` pushes raw bytes at the session; everything the session sends back is
 * decoded into `frames`.
 */
export class RawPeer extends EventEmitter<{ frame: [Frame]; closed: [] }> {
  readonly session: Session;
  /** The end the test writes to. */
  readonly end: MemoryTransport;
  /** The end the session owns (its closeCode tells how the session closed it). */
  readonly sessionEnd: MemoryTransport;
  readonly frames: Frame[] = [];
  /** Streams the session accepted, in order. */
  readonly accepted: Stream[] = [];
  /** The session's 'close' event, recorded as soon as it happens. */
  readonly sessionClosed: Promise<Error | undefined>;
  /** Resolves once the hand-driven end saw the transport close (all frames delivered by then). */
  readonly transportClosed: Promise<void>;
  transportClosedFlag = false;

  constructor(
    options: SessionOptions,
    { accept = true, highWater }: { accept?: boolean; highWater?: number } = {},
  ) {
    super();
    const [end, sessionEnd] = memoryTransportPair(highWater ? { highWater } : {});
    this.end = end;
    this.sessionEnd = sessionEnd;
    this.transportClosed = once(this, 'closed').then(() => {});
    end.attach({
      // The session only sends valid frames: decode with the largest limit anyone may use.
      message: (data) => {
        const frame = decodeFrame(data, MAX_FRAME_PAYLOAD);
        this.frames.push(frame);
        this.emit('frame', frame);
      },
      drain: () => {},
      close: () => {
        this.transportClosedFlag = true;
        this.emit('closed');
      },
    });
    this.session = new Session(sessionEnd, options);
    this.sessionClosed = once(this.session, 'close').then(([err]) => err);
    if (accept) {
      this.session.on('stream', (s) => {
        s.on('error', () => {});
        this.accepted.push(s);
      });
    }
  }

  send(...frames: Buffer[]): void {
    for (const f of frames) this.end.send(f);
  }

  hello(overrides: Partial<Hello> = {}): void {
    this.send(encodeHello({ ...PEER_HELLO, ...overrides }));
  }

  /** The first frame (already received or still to come) that matches. Rejects if the transport closes first. */
  waitFor(match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    const seen = this.frames.slice(from).find(match);
    if (seen) return Promise.resolve(seen);
    if (this.transportClosedFlag) return Promise.reject(new Error('transport closed before the frame came'));
    return new Promise((resolve, reject) => {
      const onFrame = (f: Frame) => {
        if (!match(f)) return;
        this.off('frame', onFrame);
        this.off('closed', onClosed);
        resolve(f);
      };
      const onClosed = () => {
        this.off('frame', onFrame);
        reject(new Error('transport closed before the frame came'));
      };
      this.on('frame', onFrame);
      this.once('closed', onClosed);
    });
  }

  /** Every GOAWAY the session sent, decoded. */
  goAways(): GoAway[] {
    return this.frames.filter((f) => f.type === FrameType.GoAway).map((f) => decodeGoAway(f.payload));
  }

  /** The next RST the session sends on `streamId`. */
  async rst(streamId: number): Promise<Rst> {
    const f = await this.waitFor((f) => f.type === FrameType.Rst && f.streamId === streamId);
    return decodeRst(f.payload);
  }

  /** Resolves once the session has answered a PING sent now: it processed everything sent before. */
  async roundTrip(tag: string): Promise<void> {
    const payload = Buffer.alloc(8);
    payload.write(tag.slice(0, 8));
    const from = this.frames.length;
    this.send(encodePing(FrameType.Ping, payload));
    await this.waitFor((f) => f.type === FrameType.Pong && f.payload.equals(payload), from);
  }
}

export function rawPeer(
  t: Teardown,
  options: SessionOptions,
  opts?: { accept?: boolean; highWater?: number },
): RawPeer {
  const peer = new RawPeer(options, opts);
  t.teardown(() => peer.session.destroy());
  return peer;
}
