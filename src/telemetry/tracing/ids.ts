// Trace and span ids: random bytes as lower-case hex, drawn from a pooled buffer (one
// randomFillSync per 512 ids instead of one per id).
import { randomFillSync } from 'node:crypto';

const POOL = Buffer.allocUnsafe(4096);
let offset = POOL.length;

function take(bytes: number): number {
  if (offset + bytes > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  const at = offset;
  offset += bytes;
  return at;
}

/** A non-zero 64-bit span id, 16 hex digits. */
export function spanId(): string {
  for (;;) {
    const at = take(8);
    const id = POOL.toString('hex', at, at + 8);
    if (id !== ZERO16) return id;
  }
}

/** A non-zero 128-bit trace id, 32 hex digits. */
export function traceId(): string {
  for (;;) {
    const at = take(16);
    const id = POOL.toString('hex', at, at + 16);
    if (id !== ZERO32) return id;
  }
}

export const ZERO16 = '0000000000000000';
export const ZERO32 = '00000000000000000000000000000000';

/** Lower-case hex of exactly `len` digits, not all zero. */
export function isHexId(s: string, len: number): boolean {
  if (s.length !== len) return false;
  let nonZero = false;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (c !== 48) nonZero = true;
    } else if (c >= 97 && c <= 102) nonZero = true;
    else return false;
  }
  return nonZero;
}
