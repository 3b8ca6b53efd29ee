import { type Relay, type RelayOptions, startRelay } from '@burrow/relay';
import {
  createAgentToken,
  createLogger,
  generateSigningKeyPair,
  type Logger,
  loadSigningKey,
  loadVerifyKey,
  type SigningKey,
  type Stream,
  type VerifyKey,
} from '@burrow/shared';

export interface Keys {
  signing: SigningKey;
  verify: VerifyKey;
  privatePem: string;
  publicPem: string;
}

let cached: Promise<Keys> | undefined;

/** One Ed25519 key pair per test process. */
export function testKeys(): Promise<Keys> {
  cached ??= (async () => {
    const pair = await generateSigningKeyPair();
    return {
      signing: await loadSigningKey(pair.privatePem),
      verify: await loadVerifyKey(pair.publicPem),
      privatePem: pair.privatePem,
      publicPem: pair.publicPem,
    };
  })();
  return cached;
}

export async function tokenFor(
  sub: string,
  hosts: string[],
  ttl = 3_600_000,
  ports: number[] = [],
): Promise<string> {
  const keys = await testKeys();
  return createAgentToken(keys.signing, { sub, hosts, ttl, ...(ports.length ? { ports } : {}) });
}

/** A logger that drops everything unless BURROW_TEST_LOG=1 (then JSON to stderr). */
export function testLogger(name: string): Logger {
  return createLogger({
    name,
    level: process.env['BURROW_TEST_LOG'] ? 'debug' : 'silent',
    destination: process.stderr,
  });
}

export interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** A relay on 127.0.0.1 with ephemeral ports, closed at teardown. */
export async function testRelay(t: Teardownable, options: Partial<RelayOptions> = {}): Promise<Relay> {
  const keys = await testKeys();
  const relay = await startRelay({
    http: { host: '127.0.0.1', port: 0 },
    tunnel: { host: '127.0.0.1', port: 0 },
    verifyKeys: [keys.verify],
    logger: testLogger('relay'),
    drainTimeout: 5_000,
    ...options,
  });
  t.teardown(() => relay.close());
  return relay;
}

export function tunnelUrl(relay: Relay): string {
  return `ws://127.0.0.1:${relay.tunnelAddress.port}`;
}

/** The kind of every stream the relay opens to its agents from now on, in order (`http`, `http1`, `tcp`). */
export function streamKinds(relay: Relay): string[] {
  const kinds: string[] = [];
  for (const c of relay.connections) {
    const session = c.session as unknown as { openStream(m: Buffer): Stream };
    const open = session.openStream.bind(session);
    session.openStream = (m: Buffer) => {
      kinds.push(JSON.parse(m.toString()).kind);
      return open(m);
    };
  }
  return kinds;
}
