import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomUUID,
} from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, errors, exportJWK, jwtVerify, SignJWT } from 'jose';
import { TokenError } from './errors.js';
import { checkHostPattern } from './hostname.js';

/** Default audience: tokens are minted for a Burrow relay and nothing else. */
export const DEFAULT_AUDIENCE = 'burrow-relay';
/** Signature algorithm for agent tokens. Only this is accepted: no `none`, no HMAC confusion. */
export const TOKEN_ALGORITHM = 'EdDSA';

/** What an agent token allows. */
export interface AgentClaims {
  /** The tenant: replicas of one agent share it and share routes. */
  sub: string;
  /** Hostname patterns (exact or `*.`) the agent may claim. */
  hosts: string[];
  /** Public TCP ports the agent may claim. */
  ports: number[];
  /** Token id, for revocation. */
  jti: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
}

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
}

export interface VerifyKey {
  kid: string;
  publicKey: KeyObject;
}

/** A fresh Ed25519 key pair as PEM, with its key id (RFC 7638 thumbprint). */
export async function generateSigningKeyPair(): Promise<{
  kid: string;
  privatePem: string;
  publicPem: string;
}> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    kid: await keyId(publicKey),
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

async function keyId(publicKey: KeyObject): Promise<string> {
  return calculateJwkThumbprint(await exportJWK(publicKey));
}

export async function loadSigningKey(pem: string): Promise<SigningKey> {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519')
    throw new TokenError('signing key must be an Ed25519 private key');
  return { kid: await keyId(createPublicKey(privateKey)), privateKey };
}

export async function loadVerifyKey(pem: string): Promise<VerifyKey> {
  // Accepts a public key, or a private key whose public half is used.
  const publicKey = pem.includes('PRIVATE KEY')
    ? createPublicKey(createPrivateKey(pem))
    : createPublicKey(pem);
  if (publicKey.asymmetricKeyType !== 'ed25519')
    throw new TokenError('verification key must be an Ed25519 key');
  return { kid: await keyId(publicKey), publicKey };
}

export interface CreateTokenOptions {
  sub: string;
  hosts: string[];
  ports?: number[];
  /** Lifetime in ms. */
  ttl: number;
  audience?: string;
  /** Token id, for revocation lists. Default: a random UUID. */
  jti?: string;
}

/** Longest token a relay verifies, characters. */
export const MAX_TOKEN_LENGTH = 8192;

/** Signs an agent token. Throws TokenError for claims that would never verify. */
export async function createAgentToken(key: SigningKey, opts: CreateTokenOptions): Promise<string> {
  const errs =
    validateClaimShape(opts.sub, opts.hosts, opts.ports ?? []) ??
    (opts.jti !== undefined ? checkJti(opts.jti) : undefined);
  if (errs) throw new TokenError(errs);
  if (!(opts.ttl >= 1000 && Number.isFinite(opts.ttl))) throw new TokenError('ttl must be at least 1 s');
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ hosts: opts.hosts, ports: opts.ports ?? [] })
    .setProtectedHeader({ alg: TOKEN_ALGORITHM, kid: key.kid, typ: 'JWT' })
    .setSubject(opts.sub)
    .setAudience(opts.audience ?? DEFAULT_AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.max(1, Math.round(opts.ttl / 1000)))
    .setJti(opts.jti ?? randomUUID())
    .sign(key.privateKey);
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new TokenError(
      `the token would be ${token.length} characters, over the ${MAX_TOKEN_LENGTH} a relay accepts: list fewer or shorter host patterns`,
    );
  }
  return token;
}

/** A token id revocation lists can name: 1 to 256 characters, no whitespace. */
function checkJti(jti: unknown): string | undefined {
  return typeof jti === 'string' && /^\S{1,256}$/.test(jti)
    ? undefined
    : 'jti must be a string of 1 to 256 characters without whitespace';
}

/** Host patterns one token may carry. */
export const MAX_TOKEN_HOSTS = 256;

/** What a token subject may be, as the messages say it. */
export const SUBJECT_RULE = '1-128 characters of letters, digits and . _ : @ -';

/** True for a subject a token may carry (and a revocation or a log line can name). */
export function isValidSubject(sub: unknown): sub is string {
  return typeof sub === 'string' && /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/.test(sub);
}

function validateClaimShape(sub: unknown, hosts: unknown, ports: unknown): string | undefined {
  if (!isValidSubject(sub)) return `subject must be ${SUBJECT_RULE}`;
  if (!Array.isArray(hosts) || hosts.length > MAX_TOKEN_HOSTS)
    return `hosts must be a list of at most ${MAX_TOKEN_HOSTS} patterns`;
  for (const h of hosts) {
    if (typeof h !== 'string') return 'hosts must be strings';
    const err = checkHostPattern(h);
    if (err) return err;
  }
  if (!Array.isArray(ports) || ports.length > 256) return 'ports must be a list of at most 256 numbers';
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535)
      return `port ${String(p)} must be an integer from 1 to 65535`;
  }
  return undefined;
}

/**
 * Verifies a token's signature (EdDSA only), audience and expiry against the
 * relay's keys, then the shape of its claims. Throws TokenError with a reason
 * safe to show to the agent; the token itself never appears in messages.
 */
export async function verifyAgentToken(
  token: string,
  keys: readonly VerifyKey[],
  audience: string = DEFAULT_AUDIENCE,
): Promise<AgentClaims> {
  if (keys.length === 0) throw new TokenError('relay has no verification keys configured');
  if (token.length > MAX_TOKEN_LENGTH) throw new TokenError('token too long');
  let kid: string | undefined;
  try {
    const header = decodeProtectedHeader(token);
    if (header.alg !== TOKEN_ALGORITHM)
      throw new TokenError(`token algorithm "${String(header.alg)}" is not allowed; only ${TOKEN_ALGORITHM}`);
    kid = header.kid;
  } catch (err) {
    if (err instanceof TokenError) throw err;
    throw new TokenError('token is malformed (not a JWS compact serialization)');
  }
  const candidates = kid ? keys.filter((k) => k.kid === kid) : keys;
  if (candidates.length === 0) throw new TokenError('token was signed by a key this relay does not know');
  let lastError: unknown;
  for (const key of candidates) {
    try {
      const { payload } = await jwtVerify(token, key.publicKey, {
        algorithms: [TOKEN_ALGORITHM],
        audience,
        requiredClaims: ['sub', 'exp', 'jti'],
      });
      const errs =
        validateClaimShape(payload.sub, payload['hosts'], payload['ports'] ?? []) ?? checkJti(payload.jti);
      if (errs) throw new TokenError(`token claims invalid: ${errs}`);
      return {
        sub: payload.sub!,
        hosts: payload['hosts'] as string[],
        ports: (payload['ports'] as number[] | undefined) ?? [],
        jti: payload.jti!,
        exp: payload.exp!,
      };
    } catch (err) {
      // Without a kid every key is tried: a wrong key's signature failure must not
      // hide what the right key found (expired, wrong audience, bad claims).
      if (lastError === undefined || lastError instanceof errors.JWSSignatureVerificationFailed)
        lastError = err;
    }
  }
  throw toTokenError(lastError, audience);
}

function toTokenError(err: unknown, audience: string): TokenError {
  if (err instanceof TokenError) return err;
  if (err instanceof errors.JWTExpired) return new TokenError('token expired');
  // The audience is no secret, and naming it tells the operator which side to fix.
  if (err instanceof errors.JWTClaimValidationFailed && err.claim === 'aud' && err.reason === 'check_failed')
    return new TokenError(`token claim "aud" invalid: this relay accepts only "${audience}"`);
  if (err instanceof errors.JWTClaimValidationFailed) {
    return new TokenError(
      `token claim "${err.claim}" invalid: ${err.reason === 'check_failed' ? 'unexpected value' : err.reason}`,
    );
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return new TokenError('token signature invalid');
  if (err instanceof errors.JOSEAlgNotAllowed) return new TokenError('token algorithm not allowed');
  return new TokenError('token is malformed');
}
