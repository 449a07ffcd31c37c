import { describe, expect, it } from 'vitest';
import type { UpstreamPool } from '../../src/upstream/errors.js';
import type { Cluster } from '../../src/controlplane/snapshot.js';
import { ClusterRuntime, ClusterState, type UpstreamEndpoint } from '../../src/upstream/cluster-manager.js';
import { HostHealth, OutlierDetector, type OutlierSettings } from '../../src/upstream/outlier-detection.js';

const SETTINGS: OutlierSettings = {
  consecutive5xx: 3,
  consecutiveGatewayFailure: 0,
  enforcing5xx: 100,
  enforcingGatewayFailure: 0,
  splitLocalOrigin: false,
  consecutiveLocalOriginFailure: 5,
  intervalMs: 1000,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 100,
};

/** A detector over `n` hosts with a clock the test moves. */
function setup(n: number, settings: Partial<OutlierSettings> = {}) {
  const clock = { now: 0 };
  const hosts = new Map<string, HostHealth>();
  for (let i = 0; i < n; i++) hosts.set(`h${i}`, new HostHealth());
  let changes = 0;
  const od = new OutlierDetector({ ...SETTINGS, ...settings }, hosts, () => changes++, () => clock.now);
  return { od, clock, h: (i: number) => hosts.get(`h${i}`)!, changes: () => changes };
}

describe('outlier detection (Envoy consecutive errors, as Istio configures it)', () => {
  it('ejects a host after consecutive5xxErrors 5xx in a row; a success in between resets the count', () => {
    const { od, h, changes } = setup(4);
    od.httpStatus(h(0), 500);
    od.httpStatus(h(0), 503);
    od.httpStatus(h(0), 200);
    od.httpStatus(h(0), 502);
    od.httpStatus(h(0), 504);
    expect(h(0).ejected).toBe(false);
    od.httpStatus(h(0), 500);
    expect(h(0).ejected).toBe(true);
    expect(h(0).numEjections).toBe(1);
    expect(od.ejectedCount).toBe(1);
    expect(changes()).toBe(1);
  });

  it('counts connect failures, resets and timeouts as 5xx (503/504) unless local-origin errors are split', () => {
    const { od, h } = setup(4, { consecutive5xx: 2, consecutiveGatewayFailure: 3, enforcingGatewayFailure: 100 });
    od.localFailure(h(0), 'connect');
    od.localFailure(h(0), 'reset');
    expect(h(0).ejected).toBe(true);
    const split = setup(4, { consecutive5xx: 2, splitLocalOrigin: true, consecutiveLocalOriginFailure: 3 });
    split.od.localFailure(split.h(0), 'connect');
    split.od.localFailure(split.h(0), 'timeout');
    expect(split.h(0).ejected).toBe(false);
    split.od.localFailure(split.h(0), 'reset');
    expect(split.h(0).ejected).toBe(true);
  });

  it('consecutiveGatewayErrors counts only 502/503/504; a 500 resets it', () => {
    const { od, h } = setup(4, { consecutive5xx: 0, enforcing5xx: 0, consecutiveGatewayFailure: 2, enforcingGatewayFailure: 100 });
    od.httpStatus(h(1), 502);
    od.httpStatus(h(1), 500);
    od.httpStatus(h(1), 503);
    expect(h(1).ejected).toBe(false);
    od.httpStatus(h(1), 504);
    expect(h(1).ejected).toBe(true);
  });

  it('never ejects more than maxEjectionPercent of the hosts (current Envoy: not even one when 1 host is over the limit)', () => {
    const ten = setup(3, { maxEjectionPercent: 10, consecutive5xx: 1 });
    ten.od.httpStatus(ten.h(0), 503);
    expect(ten.h(0).ejected).toBe(false);
    expect(ten.od.ejectionsOverflow).toBe(1);
    const half = setup(4, { maxEjectionPercent: 50, consecutive5xx: 1 });
    for (let i = 0; i < 4; i++) half.od.httpStatus(half.h(i), 503);
    expect([0, 1, 2, 3].filter((i) => half.h(i).ejected)).toEqual([0, 1]);
  });

  it('returns a host at the first interval sweep after baseEjectionTime x times ejected, and decays the multiplier', () => {
    const { od, h, clock } = setup(2, { consecutive5xx: 1 });
    od.httpStatus(h(0), 503);
    clock.now = 29_000;
    od.tick();
    expect(h(0).ejected).toBe(true);
    clock.now = 30_000;
    od.tick();
    expect(h(0).ejected).toBe(false);
    // Ejected again soon: twice the base time.
    clock.now = 31_000;
    od.httpStatus(h(0), 503);
    expect(h(0).ejectTimeBackoff).toBe(2);
    clock.now = 31_000 + 59_000;
    od.tick();
    expect(h(0).ejected).toBe(true);
    clock.now = 31_000 + 60_000;
    od.tick();
    expect(h(0).ejected).toBe(false);
    // Healthy sweeps bring the multiplier back down, one per interval.
    clock.now += 1000;
    od.tick();
    expect(h(0).ejectTimeBackoff).toBe(1);
    clock.now += 1000;
    od.tick();
    expect(h(0).ejectTimeBackoff).toBe(0);
  });

  it('caps the ejection time at max(300 s, base)', () => {
    const { od, h, clock } = setup(1, { consecutive5xx: 1, baseEjectionMs: 200_000, maxEjectionMs: 300_000 });
    for (let round = 0; round < 3; round++) {
      od.httpStatus(h(0), 500);
      expect(h(0).ejected).toBe(true);
      clock.now += 300_000;
      od.tick();
      expect(h(0).ejected).toBe(false);
    }
  });
});

// ---- Balancing over ejected hosts (ClusterRuntime) ----

function cluster(policy: Cluster['lb_policy'], minHealthPercent: number): Cluster {
  return {
    name: 'outbound|80||svc.default.svc.cluster.local',
    type: 'EDS',
    connect_timeout: { seconds: 1, nanos: 0 },
    lb_policy: policy,
    circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }] },
    outlier_detection: {
      consecutive_5xx: 1,
      consecutive_gateway_failure: 0,
      enforcing_consecutive_5xx: 100,
      enforcing_consecutive_gateway_failure: 0,
      interval: { seconds: 10, nanos: 0 },
      base_ejection_time: { seconds: 30, nanos: 0 },
      max_ejection_percent: 100,
      split_external_local_origin_errors: false,
      consecutive_local_origin_failure: 5,
    },
    common_http_protocol_options: { idle_timeout: { seconds: 3600, nanos: 0 }, max_requests_per_connection: 0 },
    metadata: { filter_metadata: { istio: { host: 'svc', name: 'svc', namespace: 'default', port: 80, subset: '', kind: 'service', destination_rule: 'default/svc', min_health_percent: minHealthPercent } } },
  };
}

function runtime(policy: Cluster['lb_policy'], n: number, minHealthPercent = 0) {
  const state = new ClusterState();
  const c = cluster(policy, minHealthPercent);
  const eps: UpstreamEndpoint[] = [];
  for (let i = 0; i < n; i++) {
    const hostPort = `10.0.0.${i + 1}:80`;
    eps.push({ address: `10.0.0.${i + 1}`, port: 80, hostPort, weight: 1, labels: {}, workload: `w${i}`, namespace: 'default', pool: null as unknown as UpstreamPool, active: 0, health: state.health(hostPort) });
  }
  state.configure(c, new Set(eps.map((e) => e.hostPort)));
  for (const e of eps) e.health = state.health(e.hostPort);
  const rt = new ClusterRuntime(c, eps, state);
  const picked = (k: number): Set<string> => {
    const s = new Set<string>();
    for (let i = 0; i < k; i++) {
      const e = rt.pick();
      if (e) s.add(e.hostPort);
    }
    return s;
  };
  return { rt, eps, state, picked };
}

describe('balancing with ejected hosts', () => {
  it('skips ejected hosts; with every host ejected there is none (503 UH)', () => {
    const { rt, eps, state, picked } = runtime('ROUND_ROBIN', 3);
    try {
      rt.reportStatus(eps[0]!, 503);
      expect(picked(30)).toEqual(new Set([eps[1]!.hostPort, eps[2]!.hostPort]));
      rt.reportStatus(eps[1]!, 503);
      rt.reportStatus(eps[2]!, 503);
      expect(picked(5).size).toBe(0);
    } finally {
      state.close();
    }
  });

  it('in panic (healthy % below minHealthPercent) balances across every host', () => {
    const { rt, eps, state, picked } = runtime('ROUND_ROBIN', 4, 60);
    try {
      rt.reportStatus(eps[0]!, 503); // 75% healthy: not yet panic
      expect(picked(40).size).toBe(3);
      rt.reportStatus(eps[1]!, 503); // 50% < 60%: panic
      expect(picked(40).size).toBe(4);
    } finally {
      state.close();
    }
  });

  it('consistent hashing rebuilds its ring without the ejected host', () => {
    const { rt, eps, state } = runtime('RING_HASH', 3);
    try {
      const hits = new Set<string>();
      for (let i = 0; i < 100; i++) hits.add(rt.pick()!.hostPort);
      expect(hits.size).toBe(3);
      rt.reportStatus(eps[2]!, 500);
      for (let i = 0; i < 100; i++) expect(rt.pick()!.hostPort).not.toBe(eps[2]!.hostPort);
    } finally {
      state.close();
    }
  });

  it('keeps host health across config versions while the host stays', () => {
    const { eps, state } = runtime('ROUND_ROBIN', 2);
    try {
      const rt1 = new ClusterRuntime(cluster('ROUND_ROBIN', 0), eps, state);
      rt1.reportStatus(eps[0]!, 503);
      // A new version of the same cluster, same hosts: still ejected.
      state.configure(cluster('LEAST_REQUEST', 0), new Set(eps.map((e) => e.hostPort)));
      const rt2 = new ClusterRuntime(cluster('LEAST_REQUEST', 0), eps, state);
      for (let i = 0; i < 20; i++) expect(rt2.pick()!.hostPort).toBe(eps[1]!.hostPort);
      // Outlier detection removed from the rule: every host is back.
      const plain = { ...cluster('ROUND_ROBIN', 0) };
      delete plain.outlier_detection;
      state.configure(plain, new Set(eps.map((e) => e.hostPort)));
      expect(eps[0]!.health.ejected).toBe(false);
    } finally {
      state.close();
    }
  });
});
