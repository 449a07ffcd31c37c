// The Grafana dashboards of deploy/grafana against real data: Debian's Prometheus scrapes a running
// gateway's admin /stats/prometheus every second (two worker processes, HTTP, HTTPS and TCP ports,
// the xDS port with a client that NACKs), the test drives a little traffic (200s, 404 NR, 503 UF,
// a TCP connection), a configuration change and a rejected one, then runs every PromQL expression
// of every panel through Prometheus's HTTP API, with Grafana's variables filled in. A query error
// fails; so does a panel declared to have data in this scenario that comes back empty. Kiali reads
// the same istio_* series: the labels it needs must be on them.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAds, type DiscoveryRequest, type DiscoveryResponse } from '../../src/controlplane/xds/server.js';
import { ROOT, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, sleep, waitFor } from '../helpers/net.js';
import { createCa, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, fqdn, gateway, service, serviceEntry, virtualService, workloadEntry, yamlDocs } from '../helpers/yaml.js';

interface Target {
  expr: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: Target[];
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { uid: string };
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query?: { query: string } | string; allValue?: string }> };
}

const DASHBOARDS = ['gateway.json', 'control-plane.json'].map((f) => ({ file: f, d: JSON.parse(readFileSync(join(ROOT, 'deploy/grafana', f), 'utf8')) as Dashboard }));

/**
 * Whether each panel must show data in this test's scenario. What the scenario does not produce
 * (ACME, DNS clusters, REGISTRY_ONLY refusals, L4 rejections, refused Kubernetes objects, CSR
 * errors, expired nonces) is `false`: those panels are still queried, and must not fail.
 */
const MUST_HAVE_DATA: Record<string, boolean> = {
  'gateway.json/Requests per second': true,
  'gateway.json/Success rate (non-5xx)': true,
  'gateway.json/4xx per second': true,
  'gateway.json/5xx per second': true,
  'gateway.json/Requests by destination and code': true,
  'gateway.json/Success rate by destination': true,
  'gateway.json/Request duration p50 / p90 / p99 by destination': true,
  'gateway.json/Request duration p90 by destination version': true,
  'gateway.json/Request and response sizes p90': true,
  'gateway.json/Requests by protocol': true,
  'gateway.json/Response flags': true,
  'gateway.json/Upstream errors by destination': true,
  'gateway.json/Outbound refused (REGISTRY_ONLY, undeclared ports)': false,
  'gateway.json/L4 connections rejected': false,
  'gateway.json/TCP bytes by destination': true,
  'gateway.json/TCP connections by destination': true,
  'gateway.json/Certificate expiry (days left)': true,
  'gateway.json/ACME orders': false,
  'gateway.json/Configuration reloads': true,
  'gateway.json/Configuration rejects': true,
  'gateway.json/DNS resolutions': false,
  'gateway.json/Worker threads': true,
  'gateway.json/Worker restarts': true,
  'gateway.json/CPU': true,
  'gateway.json/Memory (RSS) and event loop lag p99': true,
  'control-plane.json/Connected xDS clients': true,
  'control-plane.json/xDS clients by version': true,
  'control-plane.json/xDS clients by kind': true,
  'control-plane.json/Pushes by type': true,
  'control-plane.json/Push triggers': true,
  'control-plane.json/Push time p99 by type': true,
  'control-plane.json/Proxy convergence time p50 / p99': true,
  'control-plane.json/Config size p99 by type': true,
  'control-plane.json/Configuration pushed (total)': true,
  'control-plane.json/Rejected by clients (NACK)': true,
  'control-plane.json/Rejects by node': true,
  'control-plane.json/Expired nonces and internal errors': false,
  'control-plane.json/Certificate signing requests': true,
  'control-plane.json/CSR errors': false,
  'control-plane.json/Root certificate expiry (days left)': true,
  'control-plane.json/Signing chain expiry (days left)': true,
  'control-plane.json/Certificates issued': true,
  'control-plane.json/Certificate requests': true,
};

/** Grafana's variables as a user of this gateway would pick them. */
const VARIABLES: Record<string, string> = {
  __rate_interval: '5s',
  __interval: '1s',
  __range: '1m',
  namespace: 'istio-system',
  workload: 'gatehouse',
  service: '.*',
};
const fill = (expr: string): string => expr.replace(/\$\{?(\w+)\}?/g, (m, name: string) => VARIABLES[name] ?? m);

let gw: GatewayProcess;
let app: Echo;
let tcpEcho: Server;
let tcpEchoPort: number;
let ca: TestCa;
let prom: ChildProcess | null = null;
let promPort: number;
let promDir: string;
let promLog = '';
let P: { http: number; https: number; tcp: number; dead: number; xds: number };

function config(extraRoute = false): string {
  const cert = ca.issue('edge', { sans: ['DNS:secure.test'] });
  return yamlDocs(
    gateway('gw', P.http, ['*'], {
      servers: [
        { port: { number: P.https, name: 'https', protocol: 'HTTPS' }, hosts: ['secure.test'], tls: { mode: 'SIMPLE', serverCertificate: cert.cert, privateKey: cert.key } },
        { port: { number: P.tcp, name: 'tcp', protocol: 'TCP' }, hosts: ['*'] },
      ],
    }),
    ...service('app', { v1: app.port, v2: app.port }),
    ...service('dead', { v1: P.dead }),
    serviceEntry('tcpecho', fqdn('tcpecho'), 7000, { selectApp: 'tcpecho' }),
    workloadEntry('tcpecho-1', { app: 'tcpecho', version: 'v1' }, tcpEchoPort),
    virtualService('web', ['*'], [
      { match: [{ uri: { prefix: '/dead' } }], route: [dest('dead')] },
      ...(extraRoute ? [{ match: [{ uri: { prefix: '/v2' } }], route: [dest('app', 'v2')] }] : []),
      { route: [dest('app', 'v1', 80), dest('app', 'v2', 20)] },
    ], { gateways: ['gw'] }),
    { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'tcp', namespace: 'default' }, spec: { hosts: ['*'], gateways: ['gw'], tcp: [{ match: [{ port: P.tcp }], route: [{ destination: { host: 'tcpecho', port: { number: 7000 } } }] }] } },
  );
}

async function query(expr: string): Promise<{ status: string; error?: string; data?: { result: unknown[] } }> {
  const r = await http(promPort, `/api/v1/query?query=${encodeURIComponent(expr)}`, { timeoutMs: 5000 });
  return r.json as { status: string; error?: string; data?: { result: unknown[] } };
}

async function series(match: string): Promise<Array<Record<string, string>>> {
  const r = await http(promPort, `/api/v1/series?match[]=${encodeURIComponent(match)}`, { timeoutMs: 5000 });
  return (r.json as { data: Array<Record<string, string>> }).data;
}

beforeAll(async () => {
  app = await startEcho('app');
  tcpEcho = createServer((s) => s.pipe(s));
  tcpEchoPort = await new Promise<number>((res) => tcpEcho.listen(0, '127.0.0.1', () => res((tcpEcho.address() as { port: number }).port)));
  ca = createCa('dash');
  const [h, hs, t, d, x, p] = (await freePorts(6)) as [number, number, number, number, number, number];
  P = { http: h, https: hs, tcp: t, dead: d, xds: x };
  promPort = p;
  gw = await startGateway({ files: { 'config.yaml': config() }, args: ['--workers', '2', '--xds-port', String(P.xds)], readyTimeoutMs: 20_000 });
  promDir = mkdtempSync(join(tmpdir(), 'gatehouse-prometheus-'));
  writeFileSync(
    join(promDir, 'prometheus.yml'),
    `global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: gatehouse
  metrics_path: /stats/prometheus
  static_configs: [{targets: ['127.0.0.1:${gw.adminPort}'], labels: {app: gatehouse}}]
`,
  );
  prom = spawn('prometheus', [`--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  prom.stdout!.on('data', (b: Buffer) => (promLog += b.toString()));
  prom.stderr!.on('data', (b: Buffer) => (promLog += b.toString()));
  await waitFor(async () => (await http(promPort, '/-/ready', { timeoutMs: 1000 }).catch(() => undefined))?.status === 200, 20_000, 100).catch((e: Error) => {
    throw new Error(`${e.message}\n${promLog}`);
  });

  // An xDS client (Envoy-like, ISTIO_VERSION set) subscribed to everything; it NACKs its listeners.
  const Ads = grpc.makeGenericClientConstructor(loadAds(), 'AggregatedDiscoveryService');
  const ads = new Ads(`127.0.0.1:${P.xds}`, grpc.credentials.createInsecure()) as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>; close(): void };
  const stream = ads.StreamAggregatedResources();
  const got: DiscoveryResponse[] = [];
  stream.on('data', (m: DiscoveryResponse) => {
    got.push(m);
    const nack = m.type_url.endsWith('Listener');
    stream.write({ type_url: m.type_url, version_info: m.version_info, response_nonce: m.nonce, ...(nack ? { error_detail: { code: 3, message: 'dashboard test NACK' } } : {}) } as DiscoveryRequest);
  });
  stream.on('error', () => undefined);
  const node = { id: 'sidecar~127.0.0.9~dash.default~default.svc.cluster.local', metadata: { fields: { ISTIO_VERSION: { stringValue: '1.29.0' } } } };
  for (const t of ['Cluster', 'Listener']) stream.write({ node, type_url: `type.googleapis.com/envoy.config.${t === 'Cluster' ? 'cluster' : 'listener'}.v3.${t}`, resource_names: [] } as DiscoveryRequest);
  await waitFor(() => got.length >= 2);

  // Traffic: 200s through both subsets, 404 NR, 503 UF/URX, HTTPS, a TCP connection.
  for (let i = 0; i < 20; i++) await http(P.http, `/ok/${i}`, { headers: { host: 'dash.test' } });
  for (let i = 0; i < 3; i++) await http(P.http, '/dead', { headers: { host: 'dash.test' } });
  const tls = await import('node:https');
  await new Promise<void>((res, rej) =>
    tls.get({ host: '127.0.0.1', port: P.https, path: '/secure', servername: 'secure.test', headers: { host: 'secure.test' }, ca: ca.certPem }, (r) => r.resume().on('end', res)).on('error', rej),
  );
  await new Promise<void>((res, rej) => {
    const c = connect(P.tcp, '127.0.0.1', () => c.write('hello over tcp\n'));
    c.on('data', () => c.end());
    c.on('close', () => res());
    c.on('error', rej);
  });
  // A configuration change (applied: the xDS client converges), then an invalid one (rejected).
  gw.writeFile('config.yaml', config(true));
  await waitFor(async () => (await http(P.http, '/v2/x', { headers: { host: 'dash.test' } })).status === 200, 8_000);
  gw.writeFile('broken.yaml', 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: -1}]}]}\n');
  await waitFor(() => gw.logs().includes('configuration change rejected'), 8_000);
  gw.removeFile('broken.yaml');
  // Wait until Prometheus has scraped all of it (the last thing that happened: the rejected change).
  await waitFor(async () => ((await query('gatehouse_config_reloads_total{result="rejected"}')).data?.result.length ? true : undefined), 15_000, 250);
  await sleep(2_500);
  stream.end();
  ads.close();
}, 90_000);

afterAll(async () => {
  if (prom && prom.exitCode === null) {
    prom.kill('SIGTERM');
    await new Promise((r) => prom!.once('exit', r));
  }
  if (promDir) rmSync(promDir, { recursive: true, force: true });
  await gw?.stop();
  await app?.close();
  await new Promise((r) => tcpEcho?.close(r));
  ca?.remove();
});

describe('Grafana dashboards (deploy/grafana) against Prometheus scraping a gateway', () => {
  for (const { file, d } of DASHBOARDS) {
    it(`${file}: well-formed (unique panel ids, every panel on the data source variable, every panel declared for this test)`, () => {
      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(d.templating.list.find((v) => v.name === 'datasource')?.type).toBe('datasource');
      for (const p of d.panels.filter((x) => x.type !== 'row')) {
        expect(p.datasource?.uid, p.title).toBe('${datasource}');
        expect(p.targets?.length, p.title).toBeGreaterThan(0);
        expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
        expect(MUST_HAVE_DATA[`${file}/${p.title}`], `${file}/${p.title} has no declaration in MUST_HAVE_DATA`).toBeTypeOf('boolean');
      }
    });

    it(`${file}: every panel query runs without error, and panels that must have data have it`, async () => {
      const problems: string[] = [];
      for (const p of d.panels.filter((x) => x.type !== 'row')) {
        let rows = 0;
        for (const t of p.targets ?? []) {
          const r = await query(fill(t.expr));
          if (r.status !== 'success') problems.push(`${p.title}: ${fill(t.expr)}: ${r.error}`);
          else rows += r.data!.result.length;
        }
        if (MUST_HAVE_DATA[`${file}/${p.title}`] && rows === 0) problems.push(`${p.title}: no data`);
      }
      expect(problems).toEqual([]);
    });

    it(`${file}: the template variables find this gateway's values`, async () => {
      for (const v of d.templating.list.filter((x) => x.type === 'query')) {
        const q = typeof v.query === 'string' ? v.query : v.query!.query;
        const m = /^label_values\((.*),\s*(\w+)\)$/.exec(q);
        expect(m, q).not.toBeNull();
        const values = new Set((await series(fill(m![1]!))).map((s) => s[m![2]!]));
        const want = v.name === 'service' ? 'app.default.svc.cluster.local' : VARIABLES[v.name];
        expect([...values], v.name).toContain(want);
      }
    });
  }
});

describe("Kiali's labels on the istio_* series", () => {
  // What Kiali's graph and details pages read (kiali business/ and models/ queries).
  const COMMON = [
    'reporter', 'source_workload', 'source_workload_namespace', 'source_app', 'source_version', 'source_principal', 'source_canonical_service', 'source_canonical_revision', 'source_cluster',
    'destination_service', 'destination_service_name', 'destination_service_namespace', 'destination_workload', 'destination_workload_namespace', 'destination_app', 'destination_version',
    'destination_principal', 'destination_canonical_service', 'destination_canonical_revision', 'destination_cluster', 'request_protocol', 'response_flags', 'connection_security_policy',
  ];
  it('istio_requests_total and the request histograms carry them, with response_code', async () => {
    for (const metric of ['istio_requests_total', 'istio_request_duration_milliseconds_bucket', 'istio_request_bytes_bucket', 'istio_response_bytes_bucket']) {
      const s = await series(`${metric}{destination_service="app.default.svc.cluster.local"}`);
      expect(s.length, metric).toBeGreaterThan(0);
      for (const labels of s) for (const l of [...COMMON, 'response_code']) expect(labels[l], `${metric} ${l}`).toBeTruthy();
      expect(s[0]!['reporter']).toBe('source');
      expect(s[0]!['source_workload_namespace']).toBe('istio-system');
      expect(s[0]!['destination_workload_namespace']).toBe('default');
    }
  });

  it('istio_tcp_* carry them (no response_code, as Istio)', async () => {
    for (const metric of ['istio_tcp_sent_bytes_total', 'istio_tcp_received_bytes_total', 'istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total']) {
      const s = await series(`${metric}{destination_service="tcpecho.default.svc.cluster.local"}`);
      expect(s.length, metric).toBeGreaterThan(0);
      for (const labels of s) {
        for (const l of COMMON) expect(labels[l], `${metric} ${l}`).toBeTruthy();
        expect(labels['request_protocol']).toBe('tcp');
        expect(labels['response_code']).toBeUndefined();
      }
    }
  });
});
