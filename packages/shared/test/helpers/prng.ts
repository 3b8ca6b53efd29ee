/**
 * mulberry32: a tiny seeded PRNG, so a failing random test replays exactly
 * from its seed. Not for anything but tests.
 */
export interface Rng {
  /** Uniform float in [0, 1). */
  (): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Uniform unsigned 32-bit integer. */
  u32(): number;
  /** `n` pseudo-random bytes. */
  bytes(n: number): Buffer;
  /** One element of `items`. */
  pick<T>(items: readonly T[]): T;
}

export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  const u32 = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
  const rng = (() => u32() / 2 ** 32) as Rng;
  rng.u32 = u32;
  rng.int = (n) => Math.floor(rng() * n);
  rng.bytes = (n) => {
    const buf = Buffer.allocUnsafe(n);
    const whole = n - (n % 4);
    for (let i = 0; i < whole; i += 4) buf.writeUInt32LE(u32(), i);
    for (let i = whole; i < n; i++) buf[i] = u32() & 0xff;
    return buf;
  };
  rng.pick = (items) => {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[rng.int(items.length)]!;
  };
  return rng;
}
