// Cluster versions (ClusterManager.prepare / commit): a new version is built and warmed beside the
// current one, becomes current only when committed, and leaves the clusters of older versions
// usable for their requests until the drain time; a cluster that did not change keeps its
// connection pool, outlier ejections and circuit-breaker counts across reloads.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { ClusterManager, type ClusterRuntime } from '../../src/upstream/cluster-manager.js';
import { DnsResolver } from '../../src/upstream/dns.js';
import type { UpstreamPool } from '../../src/upstream/h2-pool.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { waitFor } from '../helpers/net.js';
import { stringify } from 'yaml';

const A = 'outbound|80||a.svc.test';
const B = 'outbound|80||b.svc.test';
const EXT = 'outbound|80||ext.test';

let upstream: Server;
let port = 0;
/** Connections the upstream accepted. */
let connections = 0;
/** Requests held open until `release()`: `/hold`. */
const held: Array<() => void> = [];
let dns: TestDnsServer;

beforeAll(async () => {
  upstream = createServer((req, res) => {
    if (req.url === '/hold') held.push(() => res.end('held'));
    else res.end('ok');
  });
  upstream.on('connection', () => connections++);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  port = (upstream.address() as AddressInfo).port;
  dns = await startDnsServer({ 'ext.backend.test': { addresses: ['127.0.0.1'], ttl: 300 } });
  dns.delays.set('ext.backend.test', 300);
});

afterAll(async () => {
  for (const r of held.splice(0)) r();
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
  await dns?.close();
});

function serviceEntry(name: string, host: string, resolution: 'STATIC' | 'DNS', address: string, extra: Record<string, unknown> = {}): string {
  return stringify({
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'default' },
    spec: { hosts: [host], location: 'MESH_EXTERNAL', resolution, ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address, ports: { http: port } }], ...extra },
  });
}

/** A's DestinationRule: eject a host after one 5xx; at most 1 pending request. */
function ruleA(): string {
  return stringify({
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: 'a', namespace: 'default' },
    spec: { host: 'a.svc.test', trafficPolicy: { outlierDetection: { consecutive5xxErrors: 1, interval: '10s', baseEjectionTime: '60s', maxEjectionPercent: 100 } } },
  });
}

function snapshot(...docs: string[]): Snapshot {
  const { resources } = parseYamlText(docs.join('---\n'), 'c.yaml');
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '127.0.0.1', mesh: DEFAULT_MESH_CONFIG });
}

/** One GET through a pool (the upstream handler protocol); resolves with the status or the error code. */
function get(pool: UpstreamPool, path = '/'): Promise<number | string> {
  return new Promise((done) => {
    let status = 0;
    try {
      pool.dispatch(
        { path, method: 'GET', headers: ['host', 'a.svc.test'], body: null },
        {
          onStart: () => undefined,
          onHead: (s: number) => ((status = s), true),
          onData: () => true,
          onEnd: () => done(status),
          onError: (e: Error & { code?: string }) => done(e.code ?? e.message),
        } as never,
      );
    } catch (e) {
      done((e as Error & { code?: string }).code ?? (e as Error).message);
    }
  });
}

const endpointOf = (c: ClusterRuntime | undefined) => {
  const ep = c?.pick();
  if (!ep) throw new Error('no endpoint');
  return ep;
};

describe('cluster versions', () => {
  it('an unchanged cluster keeps its connection pool, outlier ejection and circuit-breaker counts across a reload that changes others', async () => {
    const m = new ClusterManager();
    try {
      m.commit(await m.prepare(snapshot(serviceEntry('a', 'a.svc.test', 'STATIC', '127.0.0.1'), ruleA(), serviceEntry('b', 'b.svc.test', 'STATIC', '127.0.0.1'))));
      const a1 = m.current.get(A)!;
      const ep = endpointOf(a1);
      const before = connections;
      expect(await get(ep.pool)).toBe(200);
      // A request in flight, counted by the breaker; then a 5xx ejects the host.
      expect(a1.breaker.admit(ep.active)).toBeGreaterThanOrEqual(0);
      const inflight = get(ep.pool, '/hold');
      a1.reportStatus(ep, 503);
      const summaryA = () => m.summary().find((c) => c.name === A)!;
      expect(summaryA().endpoints[0]!.health_flags).toBe('/failed_outlier_check');
      expect(summaryA().circuit_breakers.rq_active).toBe(1);

      // Reload: B changes (another address), A does not.
      m.commit(await m.prepare(snapshot(serviceEntry('a', 'a.svc.test', 'STATIC', '127.0.0.1'), ruleA(), serviceEntry('b', 'b.svc.test', 'STATIC', '127.0.0.2'))));
      const a2 = m.current.get(A)!;
      expect(m.current.get(B)!.endpoints[0]!.address).toBe('127.0.0.2');
      expect(summaryA().endpoints[0]!.health_flags).toBe('/failed_outlier_check');
      expect(summaryA().outlier_detection?.ejections_active).toBe(1);
      expect(summaryA().circuit_breakers.rq_active).toBe(1);
      // The host is still ejected for the new version (panic threshold 0: no endpoint to pick).
      expect(a2.pick()).toBeUndefined();
      // The idle keep-alive connection from before the reload carries the next request.
      expect(await get(a2.endpoints[0]!.pool)).toBe(200);
      expect(connections - before).toBe(2); // the first request's and the held one's
      held.shift()!();
      expect(await inflight).toBe(200);
    } finally {
      await m.close();
    }
  });

  it('prepare leaves the current version alone; commit swaps it; the old version keeps a removed cluster until the drain time', async () => {
    const m = new ClusterManager({ drainMs: 200 });
    try {
      m.commit(await m.prepare(snapshot(serviceEntry('a', 'a.svc.test', 'STATIC', '127.0.0.1'))));
      const v1 = m.current;
      // (B at another address: pools are shared by address and settings, A's would stay in use.)
      const next = await m.prepare(snapshot(serviceEntry('b', 'b.svc.test', 'STATIC', '127.0.0.2')));
      // Prepared, not current: the first version serves on.
      expect(m.current).toBe(v1);
      expect(m.current.get(A)).toBeDefined();
      expect(m.current.get(B)).toBeUndefined();
      expect(next.get(A)).toBeUndefined();
      m.commit(next);
      expect(m.current.get(A)).toBeUndefined();
      expect(m.current.get(B)).toBeDefined();
      // A request of the first version (a retry, say) still finds A and its pool open.
      const a = v1.get(A)!;
      expect(await get(endpointOf(a).pool)).toBe(200);
      // After the drain time, A's pool is closed.
      await waitFor(async () => (await get(endpointOf(a).pool)) !== 200, 3_000, 50);
    } finally {
      await m.close();
    }
  });

  it('a prepared version is warm: a new DNS cluster has its endpoints when prepare resolves', async () => {
    const m = new ClusterManager({ resolver: new DnsResolver({ servers: [dns.address] }) });
    try {
      m.commit(await m.prepare(snapshot(serviceEntry('a', 'a.svc.test', 'STATIC', '127.0.0.1'))));
      const v1 = m.current;
      const preparing = m.prepare(snapshot(serviceEntry('ext', 'ext.test', 'DNS', 'ext.backend.test')));
      // While the answer is on its way (300 ms late), the current version is untouched.
      await new Promise((r) => setTimeout(r, 50));
      expect(m.current).toBe(v1);
      const next = await preparing;
      expect(next.get(EXT)!.endpoints.map((e) => e.hostPort)).toEqual([`127.0.0.1:${port}`]);
      m.commit(next);
      expect(await get(endpointOf(m.current.get(EXT)).pool)).toBe(200);
    } finally {
      await m.close();
    }
  });
});
