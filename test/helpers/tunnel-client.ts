import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { createAgentToken, TUNNEL_PATH, TUNNEL_SUBPROTOCOL } from '@burrow/shared';
import { WebSocket } from 'ws';
import { testKeys, tokenFor } from './relay.js';

/** Attempts an agent upgrade; resolves with the HTTP refusal (status and body, trimmed) or 101. */
export function attempt(
  url: string,
  token: string | undefined,
  protocol = TUNNEL_SUBPROTOCOL,
  path = TUNNEL_PATH,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(
      url + path,
      protocol,
      token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } },
    );
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
    });
    ws.on('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.on('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

/** Tokens an attacker could present, built from the test key pair (see tunnel-auth.test.ts). */
export const forge = {
  /** HS256 signed with the relay's public key as the HMAC secret (algorithm confusion). */
  async hs256WithPublicKey(): Promise<string> {
    const keys = await testKeys();
    const [, payload] = (await tokenFor('alice', ['app.example.com'])).split('.');
    const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: keys.signing.kid })).toString(
      'base64url',
    );
    const sig = createHmac('sha256', keys.publicPem).update(`${header}.${payload}`).digest('base64url');
    return `${header}.${payload}.${sig}`;
  },
  /** A valid token's claims with `alg: none` and no signature. */
  async algNone(): Promise<string> {
    const [, payload] = (await tokenFor('alice', ['app.example.com'])).split('.');
    return `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
  },
  /** Properly signed, but for another relay's audience. */
  async wrongAudience(): Promise<string> {
    const keys = await testKeys();
    return createAgentToken(keys.signing, {
      sub: 'alice',
      hosts: ['a.example.com'],
      ttl: 60_000,
      audience: 'other-relay',
    });
  },
};
