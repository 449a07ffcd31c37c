import { describe, expect, it } from 'vitest';
import { RingHash } from '../../src/upstream/ring-hash.js';
import { hashHigh, xxh64Hex, xxh64StringInto } from '../../src/upstream/xxhash64.js';

interface Host {
  name: string;
  weight: number;
}
const host = (name: string, weight = 1): Host => ({ name, weight });
const keyOf = (h: Host): string => h.name;

/** The host of each of `n` keys `user-<i>`. */
function assign(ring: RingHash<Host>, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    xxh64StringInto(`user-${i}`);
    out.push(ring.pickHash(hashHigh())!.name);
  }
  return out;
}

describe('xxHash64', () => {
  it('matches the reference test vectors (seed 0)', () => {
    expect(xxh64Hex('')).toBe('ef46db3751d8e999');
    expect(xxh64Hex('a')).toBe('d24ec4f1a98c6e5b');
    expect(xxh64Hex('abc')).toBe('44bc2cf5ad770999');
    // > 32 bytes: the four-lane path
    expect(xxh64Hex('Nobody inspects the spammish repetition')).toBe('fbcea83c8a378bf1');
  });

  it('hashes UTF-8 bytes and long keys', () => {
    expect(xxh64Hex('é')).not.toBe(xxh64Hex('e'));
    expect(xxh64Hex('x'.repeat(1000))).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('RING_HASH (ketama ring, xxHash64)', () => {
  it('builds minimumRingSize points per unit of weight and maps a key to one host, always the same', () => {
    const ring = new RingHash([host('10.0.0.1:80'), host('10.0.0.2:80'), host('10.0.0.3:80')], keyOf, 1024);
    expect(ring.size).toBe(3 * 1024);
    const first = assign(ring, 200);
    expect(assign(ring, 200)).toEqual(first);
    expect(new Set(first).size).toBe(3);
  });

  it('spreads keys by endpoint weight', () => {
    const ring = new RingHash([host('a:1', 1), host('b:1', 2), host('c:1', 1)], keyOf, 1024);
    const counts: Record<string, number> = {};
    for (const h of assign(ring, 40_000)) counts[h] = (counts[h] ?? 0) + 1;
    expect(counts['a:1']! / 40_000).toBeGreaterThan(0.2);
    expect(counts['a:1']! / 40_000).toBeLessThan(0.3);
    expect(counts['b:1']! / 40_000).toBeGreaterThan(0.45);
    expect(counts['b:1']! / 40_000).toBeLessThan(0.55);
    expect(counts['c:1']! / 40_000).toBeGreaterThan(0.2);
    expect(counts['c:1']! / 40_000).toBeLessThan(0.3);
  });

  it('removing an endpoint moves only its keys (10,000 keys)', () => {
    const all = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.4:80'].map((n) => host(n));
    const before = assign(new RingHash(all, keyOf), 10_000);
    const after = assign(new RingHash(all.filter((h) => h.name !== '10.0.0.4:80'), keyOf), 10_000);
    let untouched = 0;
    let kept = 0;
    for (let i = 0; i < before.length; i++) {
      if (before[i] === '10.0.0.4:80') continue;
      untouched++;
      if (after[i] === before[i]) kept++;
    }
    expect(untouched).toBeGreaterThan(6000);
    expect(kept / untouched).toBeGreaterThanOrEqual(0.9);
    expect(kept).toBe(untouched); // exactly: the remaining hosts' points did not change
  });

  it('adding an endpoint moves keys only to the new endpoint', () => {
    const three = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'].map((n) => host(n));
    const before = assign(new RingHash(three, keyOf), 10_000);
    const after = assign(new RingHash([...three, host('10.0.0.9:80')], keyOf), 10_000);
    let moved = 0;
    for (let i = 0; i < before.length; i++) {
      if (after[i] === before[i]) continue;
      moved++;
      expect(after[i]).toBe('10.0.0.9:80');
    }
    // About a quarter of the keys belong to the fourth host now.
    expect(moved / 10_000).toBeGreaterThan(0.18);
    expect(moved / 10_000).toBeLessThan(0.32);
  });

  it('picks a random host without a key, and nothing from an empty ring', () => {
    const ring = new RingHash([host('a:1'), host('b:1')], keyOf, 64, () => 0.999);
    expect(ring.pick()).toBeDefined();
    expect(new RingHash<Host>([], keyOf).pickHash(123)).toBeUndefined();
  });
});
