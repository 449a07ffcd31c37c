import { describe, expect, it } from 'vitest';
import { createLoadBalancer, type Weighted } from '../../src/upstream/load-balancer.js';

const ep = (name: string, weight = 1, active = 0): Weighted & { name: string } => ({ name, weight, active });

function counts<E extends { name: string }>(n: number, pick: () => E | undefined): Record<string, number> {
  const c: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const e = pick()!;
    c[e.name] = (c[e.name] ?? 0) + 1;
  }
  return c;
}

describe('load balancing', () => {
  it('ROUND_ROBIN spreads evenly, and by weight when weights differ', () => {
    const even = createLoadBalancer('ROUND_ROBIN', [ep('a'), ep('b'), ep('c')]);
    expect(counts(300, () => even.pick())).toEqual({ a: 100, b: 100, c: 100 });
    const weighted = createLoadBalancer('ROUND_ROBIN', [ep('a', 3), ep('b', 1)]);
    expect(counts(400, () => weighted.pick())).toEqual({ a: 300, b: 100 });
  });

  it('LEAST_REQUEST prefers the endpoint with fewer requests in flight', () => {
    const busy = ep('busy', 1, 50);
    const idle = ep('idle', 1, 0);
    const lb = createLoadBalancer('LEAST_REQUEST', [busy, idle]);
    expect(counts(100, () => lb.pick())).toEqual({ idle: 100 });
  });

  it('RANDOM follows weights', () => {
    let i = 0;
    const seq = [0.1, 0.6, 0.95];
    const lb = createLoadBalancer('RANDOM', [ep('a', 2), ep('b', 1), ep('c', 1)], () => seq[i++ % 3]!);
    expect(counts(3, () => lb.pick())).toEqual({ a: 1, b: 1, c: 1 });
  });

  it('avoids endpoints already tried when another is available (retry previous_hosts)', () => {
    const a = ep('a');
    const b = ep('b');
    const lb = createLoadBalancer('ROUND_ROBIN', [a, b]);
    for (let k = 0; k < 10; k++) expect(lb.pick(new Set([a]))).toBe(b);
    expect(createLoadBalancer('ROUND_ROBIN', [a]).pick(new Set([a]))).toBe(a);
  });

  it('has nothing to pick from an empty cluster', () => {
    expect(createLoadBalancer('ROUND_ROBIN', []).pick()).toBeUndefined();
  });
});
