import { describe, expect, it } from 'vitest';
import { Maglev, mod64 } from '../../src/upstream/maglev.js';
import { hashHigh, hashLow, xxh64StringInto } from '../../src/upstream/xxhash64.js';

interface Host {
  name: string;
  weight: number;
}
const host = (name: string, weight = 1): Host => ({ name, weight });
const keyOf = (h: Host): string => h.name;

function assign(table: Maglev<Host>, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    xxh64StringInto(`session-${i}`);
    out.push(table.pickHash(hashHigh(), hashLow())!.name);
  }
  return out;
}

const hosts = (n: number): Host[] => Array.from({ length: n }, (_, i) => host(`10.1.0.${i + 1}:8080`));

describe('MAGLEV (lookup table, xxHash64 permutations)', () => {
  it('computes 64-bit hash modulo the table size exactly', () => {
    // 2^32 mod 65537 = 1, so (hi * 2^32 + lo) mod 65537 = (hi + lo) mod 65537
    expect(mod64(5, 7, 65537)).toBe(12);
    expect(mod64(0xffffffff, 0xffffffff, 65537)).toBe((0xffffffff * 2) % 65537);
  });

  it('fills every slot, evenly for equal weights, the same for every host order', () => {
    const t = new Maglev(hosts(3), keyOf, 65537);
    expect(t.size).toBe(65537);
    const counts: Record<string, number> = {};
    for (const h of assign(t, 30_000)) counts[h] = (counts[h] ?? 0) + 1;
    for (const c of Object.values(counts)) expect(Math.abs(c / 30_000 - 1 / 3)).toBeLessThan(0.03);
    expect(assign(new Maglev([...hosts(3)].reverse(), keyOf, 65537), 1000)).toEqual(assign(t, 1000));
  });

  it('spreads keys by endpoint weight', () => {
    const t = new Maglev([host('a:1', 1), host('b:1', 3)], keyOf, 65537);
    const b = assign(t, 40_000).filter((h) => h === 'b:1').length / 40_000;
    expect(b).toBeGreaterThan(0.7);
    expect(b).toBeLessThan(0.8);
  });

  it('removing an endpoint moves few keys of the others (10,000 keys)', () => {
    const five = hosts(5);
    const before = assign(new Maglev(five, keyOf), 10_000);
    const gone = five[2]!.name;
    const after = assign(new Maglev(five.filter((h) => h.name !== gone), keyOf), 10_000);
    let untouched = 0;
    let kept = 0;
    for (let i = 0; i < before.length; i++) {
      if (before[i] === gone) {
        expect(after[i]).not.toBe(gone);
        continue;
      }
      untouched++;
      if (after[i] === before[i]) kept++;
    }
    expect(kept / untouched).toBeGreaterThanOrEqual(0.9);
  });

  it('adding an endpoint mostly moves keys to the new one', () => {
    const four = hosts(4);
    const before = assign(new Maglev(four, keyOf), 10_000);
    const added = host('10.1.0.99:8080');
    const after = assign(new Maglev([...four, added], keyOf), 10_000);
    let untouched = 0;
    let kept = 0;
    for (let i = 0; i < before.length; i++) {
      if (after[i] === added.name) continue;
      untouched++;
      if (after[i] === before[i]) kept++;
    }
    expect(kept / untouched).toBeGreaterThanOrEqual(0.9);
  });

  it('picks at random without a key; an empty table has no host', () => {
    expect(new Maglev(hosts(2), keyOf, 7, () => 0.5).pick()).toBeDefined();
    expect(new Maglev<Host>([], keyOf).pickHash(1, 2)).toBeUndefined();
  });
});
