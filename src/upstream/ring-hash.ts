// Ketama-style consistent hash ring (Envoy's RING_HASH): each host owns points `xxHash64("<host>_<i>")`
// on a 64-bit circle, a key goes to the first point at or after its hash. Points are kept as their
// high 32 bits in one sorted Uint32Array (binary search, no allocation per lookup).
//
// Unlike Envoy, a host's number of points depends only on its own weight (minimumRingSize points
// per unit of the smallest weight), not on how many hosts there are: adding or removing a host then
// moves only the keys that belong to it. Envoy rescales every host's points with the host count,
// which also moves some keys between hosts that stayed.
import { hashHigh, xxh64Into } from './xxhash64.js';

/** Envoy's maximum_ring_size default (8M entries). */
export const MAX_RING_SIZE = 8 * 1024 * 1024;
/** Istio/Envoy minimum_ring_size default. */
export const DEFAULT_MIN_RING_SIZE = 1024;

export class RingHash<E extends { readonly weight: number }> {
  readonly #hosts: readonly E[];
  /** Sorted point positions (high 32 bits of the point hash). */
  readonly #points: Uint32Array;
  /** Host index of each point. */
  readonly #owner: Uint32Array;
  readonly #random: () => number;

  /** `keyOf(host)` names a host stably (its `address:port`), as Envoy hashes the host address. */
  constructor(hosts: readonly E[], keyOf: (h: E) => string, minRingSize = DEFAULT_MIN_RING_SIZE, random: () => number = Math.random) {
    this.#hosts = hosts;
    this.#random = random;
    const min = Math.max(1, Math.min(minRingSize, MAX_RING_SIZE));
    let minWeight = Infinity;
    for (const h of hosts) minWeight = Math.min(minWeight, Math.max(1, h.weight));
    const counts = hosts.map((h) => Math.ceil((min * Math.max(1, h.weight)) / minWeight));
    let total = counts.reduce((a, c) => a + c, 0);
    if (total > MAX_RING_SIZE) {
      const scale = MAX_RING_SIZE / total;
      for (let i = 0; i < counts.length; i++) counts[i] = Math.max(1, Math.floor(counts[i]! * scale));
      total = counts.reduce((a, c) => a + c, 0);
    }
    // Sort (position, host) pairs as one exact double: position * 2^20 + host index (hosts < 2^20).
    const packed = new Float64Array(total);
    let k = 0;
    let buf = Buffer.allocUnsafe(64);
    hosts.forEach((h, idx) => {
      // Point keys `<host>_<i>`: the prefix is encoded once, the decimal digits written in place.
      const prefix = `${keyOf(h)}_`;
      if (buf.length < prefix.length * 3 + 12) buf = Buffer.allocUnsafe(prefix.length * 3 + 12);
      const start = buf.write(prefix, 0, 'utf8');
      for (let i = 0; i < counts[idx]!; i++) {
        xxh64Into(buf, writeDecimal(buf, start, i));
        packed[k++] = hashHigh() * 1048576 + idx;
      }
    });
    packed.sort();
    this.#points = new Uint32Array(total);
    this.#owner = new Uint32Array(total);
    for (let i = 0; i < total; i++) {
      const v = packed[i]!;
      const owner = v % 1048576;
      this.#owner[i] = owner;
      this.#points[i] = (v - owner) / 1048576;
    }
  }

  get size(): number {
    return this.#points.length;
  }

  /** The host for a key whose xxHash64 high half is `hashHigh`. */
  pickHash(hashHigh: number): E | undefined {
    const points = this.#points;
    const n = points.length;
    if (n === 0) return undefined;
    // First point at or after the hash; past the last point the ring wraps to the first.
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < hashHigh) lo = mid + 1;
      else hi = mid;
    }
    return this.#hosts[this.#owner[lo === n ? 0 : lo]!];
  }

  /** No hash key: a random point (Envoy hashes a random number). */
  pick(): E | undefined {
    return this.pickHash(Math.floor(this.#random() * 4294967296));
  }
}

/** Writes `n` (a non-negative integer) in decimal at `at`; returns the end offset. */
function writeDecimal(buf: Buffer, at: number, n: number): number {
  let digits = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
  const end = at + digits;
  for (let x = n, i = end - 1; i >= at; i--, x = Math.floor(x / 10)) buf[i] = 48 + (x % 10);
  return end;
}
