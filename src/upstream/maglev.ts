// Maglev consistent hashing (Envoy's MAGLEV): a lookup table of prime size M filled by letting each
// host claim slots in its own permutation `(offset + i * skip) mod M`, offset and skip from
// xxHash64 of the host with seeds 0 and 1, turn by turn. Weighted as Envoy does it: a host takes a
// turn only when `iteration * weight` has caught up with its target, which grows by the largest
// weight each time it claims a slot. A key goes to `table[hash mod M]`.
import { hashHigh, hashLow, xxh64StringInto } from './xxhash64.js';

export const DEFAULT_TABLE_SIZE = 65537;
/** Envoy's upper limit for maglev table_size. */
export const MAX_TABLE_SIZE = 5000011;

/** (hi * 2^32 + lo) mod m, exact for m < 2^26. */
export function mod64(hi: number, lo: number, m: number): number {
  return ((((hi % m) * (4294967296 % m)) % m) + (lo % m)) % m;
}

export class Maglev<E extends { readonly weight: number }> {
  readonly #hosts: readonly E[];
  /** Host index per slot. */
  readonly #table: Uint32Array;
  readonly #random: () => number;

  constructor(hosts: readonly E[], keyOf: (h: E) => string, tableSize = DEFAULT_TABLE_SIZE, random: () => number = Math.random) {
    const m = Math.max(2, Math.min(tableSize, MAX_TABLE_SIZE));
    // Fill in a stable order (by host key), so the table does not depend on the config's order.
    const order = hosts.map((h, i) => ({ i, key: keyOf(h), w: Math.max(1, h.weight) })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    this.#hosts = hosts;
    this.#random = random;
    const table = new Uint32Array(m);
    this.#table = table;
    const n = order.length;
    if (n === 0) return;
    const next = new Float64Array(n);
    const skip = new Float64Array(n);
    const target = new Float64Array(n);
    let maxW = 0;
    for (let j = 0; j < n; j++) {
      const e = order[j]!;
      xxh64StringInto(e.key, 0);
      next[j] = mod64(hashHigh(), hashLow(), m);
      xxh64StringInto(e.key, 1);
      skip[j] = mod64(hashHigh(), hashLow(), m - 1) + 1;
      maxW = Math.max(maxW, e.w);
    }
    const filled = new Uint8Array(m);
    let count = 0;
    for (let iteration = 1; count < m; iteration++) {
      for (let j = 0; j < n && count < m; j++) {
        const e = order[j]!;
        if (iteration * e.w < target[j]!) continue;
        target[j]! += maxW;
        let c = next[j]!;
        while (filled[c] === 1) c = (c + skip[j]!) % m;
        filled[c] = 1;
        table[c] = e.i;
        next[j] = (c + skip[j]!) % m;
        count++;
      }
    }
  }

  get size(): number {
    return this.#table.length;
  }

  /** The host for a key hash (both 32-bit halves of its xxHash64). */
  pickHash(hi: number, lo: number): E | undefined {
    if (this.#hosts.length === 0) return undefined;
    return this.#hosts[this.#table[mod64(hi, lo, this.#table.length)]!];
  }

  /** No hash key: a random slot. */
  pick(): E | undefined {
    if (this.#hosts.length === 0) return undefined;
    return this.#hosts[this.#table[Math.floor(this.#random() * this.#table.length)]!];
  }
}
