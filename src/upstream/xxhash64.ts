// xxHash64 (seed 0 by default), the hash Envoy uses for ring hash, Maglev and its hash policies.
// JavaScript has no fast unsigned 64-bit integers (BigInt allocates), so each 64-bit value is a pair
// of uint32 halves and every operation leaves its result in the register array R (high, low):
// hashing a short key allocates nothing.

// Result registers of the 64-bit helpers below. A typed array, not two `let`s: numbers beyond the
// small-integer range stored in module variables are boxed by V8, i.e. one allocation per write.
const R = new Uint32Array(2);

// The five xxHash64 primes, as [high, low] halves.
const P1H = 0x9e3779b1, P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d, P2L = 0x27d4eb4f;
const P3H = 0x165667b1, P3L = 0x9e3779f9;
const P4H = 0x85ebca77, P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f, P5L = 0x165667c5;

function add(ah: number, al: number, bh: number, bl: number): void {
  const lo = al + bl;
  R[0] = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
  R[1] = lo >>> 0;
}

/** (a * b) mod 2^64. The low halves' full product is built from 16-bit pieces to stay exact in doubles. */
function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff, a1 = al >>> 16;
  const b0 = bl & 0xffff, b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const lo = a0 * b0 + (mid % 65536) * 65536; // < 2^33
  const hi = a1 * b1 + Math.floor(mid / 65536) + Math.floor(lo / 4294967296) + Math.imul(ah, bl) + Math.imul(al, bh);
  R[0] = hi >>> 0;
  R[1] = lo >>> 0;
}

/** Rotate left by r, 0 < r < 32 (every rotation xxHash64 uses is). */
function rotl(h: number, l: number, r: number): void {
  R[0] = ((h << r) | (l >>> (32 - r))) >>> 0;
  R[1] = ((l << r) | (h >>> (32 - r))) >>> 0;
}

/** acc = rotl(acc + lane * P2, 31) * P1 */
function round(acch: number, accl: number, laneh: number, lanel: number): void {
  mul(laneh, lanel, P2H, P2L);
  add(acch, accl, R[0]!, R[1]!);
  rotl(R[0]!, R[1]!, 31);
  mul(R[0]!, R[1]!, P1H, P1L);
}

function u32(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
}

/**
 * xxHash64 of `bytes[0, length)`; the result is left in the registers, read with `hashHigh()` /
 * `hashLow()` right after. `seed` is a small non-negative integer (Envoy uses 0 and 1).
 */
export function xxh64Into(bytes: Uint8Array, length: number, seed = 0): void {
  let i = 0;
  let hh: number, hl: number;
  if (length >= 32) {
    // Four accumulators: seed + P1 + P2, seed + P2, seed, seed - P1.
    add(P1H, P1L, P2H, P2L);
    add(R[0]!, R[1]!, 0, seed);
    let v1h = R[0]!, v1l = R[1]!;
    add(P2H, P2L, 0, seed);
    let v2h = R[0]!, v2l = R[1]!;
    let v3h = 0, v3l = seed;
    // seed - P1 = seed + (2^64 - P1)
    add(~P1H >>> 0, ~P1L >>> 0, 0, 1);
    add(R[0]!, R[1]!, 0, seed);
    let v4h = R[0]!, v4l = R[1]!;
    const limit = length - 32;
    while (i <= limit) {
      round(v1h, v1l, u32(bytes, i + 4), u32(bytes, i));
      v1h = R[0]!; v1l = R[1]!;
      round(v2h, v2l, u32(bytes, i + 12), u32(bytes, i + 8));
      v2h = R[0]!; v2l = R[1]!;
      round(v3h, v3l, u32(bytes, i + 20), u32(bytes, i + 16));
      v3h = R[0]!; v3l = R[1]!;
      round(v4h, v4l, u32(bytes, i + 28), u32(bytes, i + 24));
      v4h = R[0]!; v4l = R[1]!;
      i += 32;
    }
    rotl(v1h, v1l, 1);
    hh = R[0]!; hl = R[1]!;
    rotl(v2h, v2l, 7);
    add(hh, hl, R[0]!, R[1]!);
    hh = R[0]!; hl = R[1]!;
    rotl(v3h, v3l, 12);
    add(hh, hl, R[0]!, R[1]!);
    hh = R[0]!; hl = R[1]!;
    rotl(v4h, v4l, 18);
    add(hh, hl, R[0]!, R[1]!);
    hh = R[0]!; hl = R[1]!;
    // Merge each accumulator: h = (h ^ round(0, v)) * P1 + P4
    for (let k = 0; k < 4; k++) {
      const vh = k === 0 ? v1h : k === 1 ? v2h : k === 2 ? v3h : v4h;
      const vl = k === 0 ? v1l : k === 1 ? v2l : k === 2 ? v3l : v4l;
      round(0, 0, vh, vl);
      mul((hh ^ R[0]!) >>> 0, (hl ^ R[1]!) >>> 0, P1H, P1L);
      add(R[0]!, R[1]!, P4H, P4L);
      hh = R[0]!; hl = R[1]!;
    }
  } else {
    add(0, seed, P5H, P5L);
    hh = R[0]!; hl = R[1]!;
  }
  // h += length (lengths here stay far below 2^32)
  add(hh, hl, 0, length);
  hh = R[0]!; hl = R[1]!;
  while (i + 8 <= length) {
    round(0, 0, u32(bytes, i + 4), u32(bytes, i));
    rotl((hh ^ R[0]!) >>> 0, (hl ^ R[1]!) >>> 0, 27);
    mul(R[0]!, R[1]!, P1H, P1L);
    add(R[0]!, R[1]!, P4H, P4L);
    hh = R[0]!; hl = R[1]!;
    i += 8;
  }
  if (i + 4 <= length) {
    mul(0, u32(bytes, i), P1H, P1L);
    rotl((hh ^ R[0]!) >>> 0, (hl ^ R[1]!) >>> 0, 23);
    mul(R[0]!, R[1]!, P2H, P2L);
    add(R[0]!, R[1]!, P3H, P3L);
    hh = R[0]!; hl = R[1]!;
    i += 4;
  }
  while (i < length) {
    mul(0, bytes[i]!, P5H, P5L);
    rotl((hh ^ R[0]!) >>> 0, (hl ^ R[1]!) >>> 0, 11);
    mul(R[0]!, R[1]!, P1H, P1L);
    hh = R[0]!; hl = R[1]!;
    i++;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32
  hl = (hl ^ (hh >>> 1)) >>> 0;
  mul(hh, hl, P2H, P2L);
  hh = R[0]!; hl = R[1]!;
  hl = (hl ^ ((hl >>> 29) | (hh << 3))) >>> 0;
  hh = (hh ^ (hh >>> 29)) >>> 0;
  mul(hh, hl, P3H, P3L);
  hh = R[0]!; hl = R[1]!;
  R[0] = hh;
  R[1] = (hl ^ hh) >>> 0;
}

/** High 32 bits of the last hash. */
export function hashHigh(): number {
  return R[0]!;
}

/** Low 32 bits of the last hash. */
export function hashLow(): number {
  return R[1]!;
}

// Keys are encoded into this buffer instead of a fresh Buffer per call.
let scratch = Buffer.allocUnsafe(256);

/** xxHash64 of a string's UTF-8 bytes; read the halves with `hashHigh()` / `hashLow()`. */
export function xxh64StringInto(s: string, seed = 0): void {
  if (s.length * 3 > scratch.length) scratch = Buffer.allocUnsafe(Math.max(s.length * 3, scratch.length * 2));
  const n = scratch.write(s, 0, 'utf8');
  xxh64Into(scratch, n, seed);
}

/** xxHash64 of a string as 16 lower-case hex digits (tests, cookie values). */
export function xxh64Hex(s: string, seed = 0): string {
  xxh64StringInto(s, seed);
  return R[0]!.toString(16).padStart(8, '0') + R[1]!.toString(16).padStart(8, '0');
}
