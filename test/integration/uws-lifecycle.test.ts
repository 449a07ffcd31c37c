// The uWS rules that would abort the whole process if broken: every handler must respond or
// register onAborted before returning, and nothing may touch a response after it ended or was
// aborted. These tests drive the listener in-process with failures injected where they hurt.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { UwsHttpListener } from '../../src/ingress/uws-listener.js';
import { RouteTable } from '../../src/routing/route-table.js';
import { IstioMetrics } from '../../src/telemetry/metrics.js';
import { ClusterManager } from '../../src/upstream/cluster-manager.js';
import { freePort } from '../helpers/net.js';

let upstream: Server;
let upstreamPort = 0;
const upstreamClosed: string[] = [];

function config(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: ${port}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [app.local]
  gateways: [gw]
  http:
  - route: [{destination: {host: app.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: ${upstreamPort}}}]
`;
}

async function startListener(throwingTable: boolean): Promise<{ listener: UwsHttpListener; port: number; errors: unknown[] }> {
  const port = await freePort();
  const { resources } = parseYamlText(config(port), 'c.yaml');
  const snapshot = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '127.0.0.1', mesh: DEFAULT_MESH_CONFIG });
  const clusters = new ClusterManager();
  clusters.update(snapshot);
  const table = new RouteTable(snapshot.routes.get(`http.${port}`)!);
  if (throwingTable) {
    table.virtualHost = (): never => {
      throw new Error('injected routing failure');
    };
  }
  const ctx = { clusters: clusters.current, metrics: new IstioMetrics({ labels: {}, namespace: 'istio-system' }), accessLog: null, table };
  const listener = new UwsHttpListener({ bind: '127.0.0.1', port, routeName: `http.${port}`, scheme: 'http' }, ctx);
  const errors: unknown[] = [];
  listener.onError = (e) => errors.push(e);
  await listener.listen();
  return { listener, port, errors };
}

beforeAll(async () => {
  upstream = createServer((req, res) => {
    req.on('close', () => {
      if (!res.writableEnded) upstreamClosed.push(req.url ?? '');
    });
    if (req.url === '/slow') {
      setTimeout(() => res.end('late'), 2000).unref();
      return;
    }
    res.end('ok');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  upstreamPort = (upstream.address() as AddressInfo).port;
});

afterAll(async () => {
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
});

describe('uWS request lifecycle', () => {
  it('answers 500 when the handler throws, and keeps serving', async () => {
    const { listener, port, errors } = await startListener(true);
    try {
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'app.local' } });
      expect(r.statusCode).toBe(500);
      expect(r.headers['server']).toBe('istio-envoy');
      await r.body.dump();
      expect((errors[0] as Error).message).toBe('injected routing failure');
      const again = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'app.local' } });
      expect(again.statusCode).toBe(500);
      await again.body.dump();
    } finally {
      await listener.close(0);
    }
  });

  it('survives clients that disconnect while their request is upstream, and cancels the upstream request', async () => {
    const { listener, port } = await startListener(false);
    try {
      const sockets = Array.from({ length: 20 }, () => {
        const s = connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        s.write('GET /slow HTTP/1.1\r\nHost: app.local\r\n\r\n');
        return s;
      });
      await new Promise((r) => setTimeout(r, 300));
      for (const s of sockets) s.destroy();
      // The upstream sees its requests cancelled, well before the 2 s it takes to answer.
      const deadline = Date.now() + 1500;
      while (upstreamClosed.filter((u) => u === '/slow').length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      expect(upstreamClosed.filter((u) => u === '/slow').length).toBe(20);
      expect(listener.inflight).toBe(0);
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'app.local' } });
      expect(r.statusCode).toBe(200);
      expect(await r.body.text()).toBe('ok');
    } finally {
      await listener.close(0);
    }
  });

  it('survives a client that disconnects half-way through sending its body', async () => {
    const { listener, port } = await startListener(false);
    try {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write('POST / HTTP/1.1\r\nHost: app.local\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(30000));
      await new Promise((r) => setTimeout(r, 200));
      s.destroy();
      await new Promise((r) => setTimeout(r, 100));
      expect(listener.inflight).toBe(0);
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'app.local' } });
      expect(r.statusCode).toBe(200);
      await r.body.dump();
    } finally {
      await listener.close(0);
    }
  });
});
