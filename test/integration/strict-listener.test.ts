// The strict HTTP/1.1 engine of plain HTTP ports, in process (the node:http side of NodeListener with
// `http1Only`): what a plaintext HTTP listener owes besides routing — ACME HTTP-01 answers — and
// that it speaks HTTP/1.1 only, as the uWS port it replaces (no h2c with prior knowledge).
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RouteConfiguration } from '../../src/controlplane/snapshot.js';
import type { DataPlaneContext } from '../../src/ingress/exchange.js';
import { NodeListener } from '../../src/ingress/node-listener.js';
import { RouteTable } from '../../src/routing/route-table.js';
import { IstioMetrics } from '../../src/telemetry/metrics.js';
import { acmeChallenges } from '../../src/tls/acme-challenges.js';
import { ClusterManager } from '../../src/upstream/cluster-manager.js';
import { http, rawExchange, rawStatus } from '../helpers/net.js';

const ROUTES: RouteConfiguration = {
  name: 'http.0',
  validate_clusters: false,
  virtual_hosts: [
    {
      name: 'plain.test:80',
      domains: ['plain.test', 'plain.test:*'],
      include_request_attempt_count: true,
      routes: [
        {
          name: 'hello',
          match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
          direct_response: { status: 200, body: { inline_string: 'hello' } },
          metadata: { filter_metadata: { istio: { config: '' } } },
        },
      ],
    },
  ],
};

let listener: NodeListener;
let port: number;

beforeAll(async () => {
  const metrics = new IstioMetrics({ labels: {}, namespace: 'istio-system' });
  const ctx = { clusters: new ClusterManager().current, metrics, accessLog: null, table: new RouteTable(ROUTES) } as unknown as DataPlaneContext;
  listener = new NodeListener({ bind: '127.0.0.1', port: 0, routeName: 'http.0', http1Only: true }, ctx);
  await listener.listen();
  port = listener.boundPort;
});

afterAll(async () => {
  acmeChallenges.delete('strict-token');
  await listener?.close(0);
});

describe('strict HTTP/1.1 engine (node:http, plaintext)', () => {
  it('answers ACME HTTP-01 challenges before routing, as every plaintext HTTP listener does', async () => {
    acmeChallenges.set('strict-token', 'strict-token.key-authorization');
    const r = await http(port, '/.well-known/acme-challenge/strict-token', { headers: { host: 'any.example.com' } });
    expect(r.status).toBe(200);
    expect(r.text).toBe('strict-token.key-authorization');
    const routed = await http(port, '/', { headers: { host: 'plain.test' } });
    expect(routed.text).toBe('hello');
  });

  it('speaks HTTP/1.1 only: the HTTP/2 connection preface is a malformed request (400), as on a uWS port no h2c is served', async () => {
    const r = await rawExchange(port, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', { timeoutMs: 2000 });
    expect(rawStatus(r.data)).toBe(400);
    expect(r.closed).toBe(true);
    const err = await new Promise<unknown>((resolve) => {
      const s = http2.connect(`http://127.0.0.1:${port}`);
      s.on('error', resolve);
      s.on('close', () => resolve(new Error('closed')));
      const req = s.request({ ':path': '/', ':authority': 'plain.test' });
      req.on('response', () => resolve(null));
      req.on('error', () => undefined);
    });
    expect(err).not.toBeNull();
  });
});
