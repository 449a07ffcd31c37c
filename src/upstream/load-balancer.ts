// Endpoint selection per cluster. Each balancer is built once per config version over a fixed
// endpoint list; `pick` is the only per-request call.
import type { LbPolicy } from '../controlplane/snapshot.js';

export interface Weighted {
  readonly weight: number;
  /** Requests in flight to this endpoint (LEAST_REQUEST). */
  active: number;
}

export interface LoadBalancer<E extends Weighted> {
  /** An endpoint, avoiding those in `exclude` when any other is available; undefined when there are none. */
  pick(exclude?: ReadonlySet<E>): E | undefined;
}

export function createLoadBalancer<E extends Weighted>(policy: LbPolicy, endpoints: readonly E[], random: () => number = Math.random): LoadBalancer<E> {
  if (endpoints.length === 0) return { pick: () => undefined };
  if (endpoints.length === 1) {
    const only = endpoints[0]!;
    return { pick: () => only };
  }
  switch (policy) {
    case 'LEAST_REQUEST':
      return new LeastRequest(endpoints, random);
    case 'RANDOM':
      return new RandomLb(endpoints, random);
    default:
      return new RoundRobin(endpoints);
  }
}

function uniformWeights(eps: readonly Weighted[]): boolean {
  const w = eps[0]!.weight;
  return eps.every((e) => e.weight === w);
}

/** Tries `choose` a few times to avoid excluded endpoints, then accepts any (Envoy's host_selection_retry_max_attempts: 5). */
function avoiding<E>(choose: () => E, exclude: ReadonlySet<E> | undefined): E {
  let e = choose();
  if (!exclude || exclude.size === 0) return e;
  for (let i = 0; i < 5 && exclude.has(e); i++) e = choose();
  return e;
}

/** Round robin; with unequal weights, smooth weighted round robin (the same spread Envoy's EDF gives). */
class RoundRobin<E extends Weighted> implements LoadBalancer<E> {
  readonly #eps: readonly E[];
  readonly #uniform: boolean;
  readonly #current: number[];
  readonly #total: number;
  #next = 0;

  constructor(eps: readonly E[]) {
    this.#eps = eps;
    this.#uniform = uniformWeights(eps);
    this.#current = eps.map(() => 0);
    this.#total = eps.reduce((a, e) => a + e.weight, 0);
    // Start at a random place so that replicas and restarts do not all hit the first endpoint.
    this.#next = Math.floor(Math.random() * eps.length);
  }

  pick(exclude?: ReadonlySet<E>): E {
    return avoiding(() => this.#one(), exclude);
  }

  #one(): E {
    const eps = this.#eps;
    if (this.#uniform) {
      const e = eps[this.#next]!;
      this.#next = (this.#next + 1) % eps.length;
      return e;
    }
    let best = 0;
    for (let i = 0; i < eps.length; i++) {
      this.#current[i]! += eps[i]!.weight;
      if (this.#current[i]! > this.#current[best]!) best = i;
    }
    this.#current[best]! -= this.#total;
    return eps[best]!;
  }
}

/** Power of two choices: two random endpoints, the one with fewer requests in flight (weighted by weight). */
class LeastRequest<E extends Weighted> implements LoadBalancer<E> {
  readonly #eps: readonly E[];
  readonly #random: () => number;
  readonly #weighted: RandomLb<E>;

  constructor(eps: readonly E[], random: () => number) {
    this.#eps = eps;
    this.#random = random;
    this.#weighted = new RandomLb(eps, random);
  }

  pick(exclude?: ReadonlySet<E>): E {
    return avoiding(() => this.#one(), exclude);
  }

  #one(): E {
    const a = this.#weighted.pick();
    let b = this.#weighted.pick();
    if (b === a) b = this.#eps[(this.#eps.indexOf(a) + 1 + Math.floor(this.#random() * (this.#eps.length - 1))) % this.#eps.length]!;
    // Envoy's weighted least request: effective load = active / weight.
    return b.active / b.weight < a.active / a.weight ? b : a;
  }
}

class RandomLb<E extends Weighted> implements LoadBalancer<E> {
  readonly #eps: readonly E[];
  readonly #random: () => number;
  readonly #cumulative: number[] | null;
  readonly #total: number;

  constructor(eps: readonly E[], random: () => number) {
    this.#eps = eps;
    this.#random = random;
    let acc = 0;
    this.#cumulative = uniformWeights(eps) ? null : eps.map((e) => (acc += e.weight));
    this.#total = acc;
  }

  pick(exclude?: ReadonlySet<E>): E {
    return avoiding(() => this.#one(), exclude);
  }

  #one(): E {
    const eps = this.#eps;
    const cum = this.#cumulative;
    if (cum === null) return eps[Math.floor(this.#random() * eps.length)]!;
    const x = this.#random() * this.#total;
    for (let i = 0; i < cum.length; i++) if (x < cum[i]!) return eps[i]!;
    return eps[eps.length - 1]!;
  }
}
