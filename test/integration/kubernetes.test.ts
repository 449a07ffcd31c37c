// `gatehouse run --kubernetes` against the test API server (test/helpers/kube-apiserver.ts),
// driven by kubectl as a user would: changes applied end to end, bad objects from other people
// skipped on their own, watches broken and histories compacted without a lost event, the API
// server going away and coming back, RBAC and missing CRDs, readiness held until the first sync,
// a credentialName Secret rotated.
import { connect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

// Each gateway here starts with --kubernetes (see the ready timeout in test/helpers/gateway.ts).
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { KubeApiServer, kubectl, kubectlOk, type KObj } from '../helpers/kube-apiserver.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePorts, http, sleep, waitFor } from '../helpers/net.js';
import { createCa, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

/** Faster reconnects than in production, so that a test of an outage takes seconds. */
const KUBE_ENV = { GATEHOUSE_KUBE_BACKOFF_MS: '100,800' };
const APPLY_MS = 2000;

let api: KubeApiServer;
let gw: GatewayProcess;
let v1: Echo;
let v2: Echo;
let v3: Echo;
let port: number;

const vs = (name: string, host: string, subset: string): KObj => virtualService(name, [host], [{ route: [dest('app', subset)] }]);
const get = (host: string, p = port) => http(p, '/', { headers: { host }, timeoutMs: 3000 });
const upstream = async (host: string): Promise<string> => {
  const r = await get(host);
  return r.status === 200 ? (r.json.name as string) : `status ${r.status}`;
};
const apply = (...docs: KObj[]) => kubectlOk(api, ['apply', '-f', '-'], { stdin: yamlDocs(...docs) });
const replace = (...docs: KObj[]) => kubectlOk(api, ['replace', '-f', '-'], { stdin: yamlDocs(...docs) });
/** The serving configuration's version (`<n>-<hash>`), from /config_dump's listeners. */
const versionOf = async (g: GatewayProcess): Promise<string> => {
  const v = (await g.admin('/config_dump')).json.configs[1].version_info as string;
  expect(v).toMatch(/^\d+-[0-9a-f]{8}$/);
  return v;
};
const configVersion = (): Promise<string> => versionOf(gw);
/** The log lines' messages (the gateway logs JSON lines here). */
const messages = (g: GatewayProcess): string[] =>
  g.logs().split('\n').flatMap((l) => {
    try {
      return [String((JSON.parse(l) as { msg?: unknown }).msg ?? '')];
    } catch {
      return [];
    }
  });
/** GET lists (not watches) of a collection the test API server answered. */
const lists = (server: KubeApiServer, resource: string): number => server.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/${resource}`) && r.query.watch !== 'true').length;
const rejectedTotal = async (kind: string): Promise<number> => sumSamples(findSamples(parsePrometheus((await gw.admin('/stats/prometheus')).text), 'gatehouse_config_rejected_total', { kind }));

beforeAll(async () => {
  api = new KubeApiServer({ bookmarkIntervalMs: 300 });
  await api.start();
  [v1, v2, v3] = await Promise.all([startEcho('v1'), startEcho('v2'), startEcho('v3')]);
  [port] = (await freePorts(1)) as [number];
  await apply(gateway('gw', port), ...service('app', { v1: v1.port, v2: v2.port, v3: v3.port }), vs('app', 'app.test', 'v1'));
  // Kinds kept for the service registry: accepted as they are, without a word.
  api.putAll([
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews', namespace: 'default' }, spec: { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080, targetPort: 9080 }] } },
    { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'reviews-abc', namespace: 'default', labels: { 'kubernetes.io/service-name': 'reviews' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'reviews-1', namespace: 'default' } }], ports: [{ name: 'http', port: 9080 }] },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'reviews-1', namespace: 'default', labels: { app: 'reviews', version: 'v1' } }, spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'x' }] }, status: { phase: 'Running', podIP: '10.0.0.1' } },
  ]);
  gw = await startGateway({ files: {}, kubeconfig: api.defaultKubeconfig, env: KUBE_ENV, args: ['--log-level', 'info'] });
});

afterAll(async () => {
  await gw?.stop();
  await api?.close();
  await Promise.all([v1?.close(), v2?.close(), v3?.close()]);
});

describe('--kubernetes: configuration from the API server', () => {
  it('serves what the API holds; Services, EndpointSlices and Pods are accepted without a problem', async () => {
    expect(await upstream('app.test')).toBe('v1');
    expect(gw.logs()).toContain('first full list of every watched kind received');
    expect(gw.logs()).not.toMatch(/(?<![A-Za-z])(Service|EndpointSlice|Pod)\/default\/[a-z0-9-]+: /);
    expect(gw.logs()).not.toContain('is not supported by Gatehouse');
  });

  it('a VirtualService changed with `kubectl replace` takes effect, change after change', async () => {
    for (const subset of ['v2', 'v3', 'v1', 'v2']) {
      await replace(vs('app', 'app.test', subset));
      await waitFor(async () => (await upstream('app.test')) === subset, APPLY_MS);
    }
    // New objects and deletions too.
    await apply(vs('other', 'other.test', 'v3'));
    await waitFor(async () => (await upstream('other.test')) === 'v3', APPLY_MS);
    await kubectlOk(api, ['delete', 'virtualservice', 'other']);
    await waitFor(async () => (await get('other.test')).status === 404, APPLY_MS);
  });

  it('an invalid object is skipped on its own (logged as kind/ns/name: path: message, counted); a valid one beside it applies; a bad new version keeps the last good one', async () => {
    const before = await rejectedTotal('VirtualService');
    const bad = virtualService('bad', ['bad.test'], [{ match: [{ uri: { regex: '(?=lookahead)' } }], route: [dest('app', 'v1')] }]);
    await apply(bad, vs('good', 'good.test', 'v2'));
    await waitFor(async () => (await upstream('good.test')) === 'v2', APPLY_MS);
    expect((await get('bad.test')).status).toBe(404);
    await waitFor(() => gw.logs().includes('VirtualService/default/bad: spec.http[0].match[0].uri.regex: '), APPLY_MS);
    expect(await rejectedTotal('VirtualService')).toBe(before + 1);
    expect(gw.logs()).toContain('left out: it has no valid version to keep');

    // A valid object whose new version is bad: the last good version keeps serving.
    await replace(virtualService('good', ['good.test'], [{ route: [dest('app', 'v2', -5)] }]));
    await waitFor(() => gw.logs().includes('VirtualService/default/good: spec.http[0].route[0].weight: '), APPLY_MS);
    expect(gw.logs()).toContain('its last good version keeps serving');
    expect(await rejectedTotal('VirtualService')).toBe(before + 2);
    expect(await upstream('good.test')).toBe('v2');
    // Everything else still applies, and the bad object is reported once, not on every change.
    await replace(vs('app', 'app.test', 'v3'));
    await waitFor(async () => (await upstream('app.test')) === 'v3', APPLY_MS);
    expect(gw.logs().split('\n').filter((l) => l.includes('VirtualService/default/bad: spec.http[0].match[0].uri.regex')).length).toBe(1);
    expect(await rejectedTotal('VirtualService')).toBe(before + 2);
    // Fixed: it applies.
    await replace(vs('bad', 'bad.test', 'v1'), vs('good', 'good.test', 'v1'));
    await waitFor(async () => (await upstream('bad.test')) === 'v1' && (await upstream('good.test')) === 'v1', APPLY_MS);
    // Without --write-status, no status is written.
    expect(api.requests.filter((r) => r.path.endsWith('/status'))).toEqual([]);
  });

  it('a watch broken mid-stream resumes from its resourceVersion: a change made meanwhile is not lost', async () => {
    await waitFor(() => api.watchCount('virtualservices') > 0, 3000);
    expect(api.breakWatches()).toBeGreaterThan(0);
    api.put(vs('app', 'app.test', 'v1'));
    await waitFor(async () => (await upstream('app.test')) === 'v1', APPLY_MS);
    // It resumed from where it was: no list was needed.
    expect(lists(api, 'virtualservices')).toBe(1);
  });

  it('a 410 Expired on resume relists and applies only the difference: changes and deletions made while away are all seen', async () => {
    const listsBefore = lists(api, 'virtualservices');
    await api.stop();
    api.put(vs('app', 'app.test', 'v2'));
    api.put(vs('while-away', 'away.test', 'v3'));
    api.remove('networking.istio.io/v1', 'VirtualService', 'default', 'bad');
    api.compact();
    await api.start();
    await waitFor(async () => (await upstream('app.test')) === 'v2' && (await upstream('away.test')) === 'v3' && (await get('bad.test')).status === 404, 5000);
    expect(lists(api, 'virtualservices')).toBe(listsBefore + 1);
    expect(api.requests.some((r) => r.query.watch === 'true' && r.status === 200 && Number(r.query.resourceVersion) > 0)).toBe(true);
  });

  it('a relist that finds nothing changed builds no new configuration version', async () => {
    await waitFor(() => api.watchCount('virtualservices') > 0, 5000);
    const version = await configVersion();
    const listsBefore = lists(api, 'virtualservices');
    // A revision the informers have not seen (no bookmark can come in between), then compaction:
    // resuming gets 410 Expired, and every kind is listed again.
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'unrelated', namespace: 'default' }, data: {} });
    api.compact();
    api.breakWatches();
    await waitFor(() => lists(api, 'virtualservices') > listsBefore, 5000);
    await waitFor(() => api.watchCount('virtualservices') > 0, 5000);
    await sleep(700);
    expect(await configVersion()).toBe(version);
  });

  it('the mesh config from the ConfigMap `istio` of the root namespace (here: access logs turned on and off)', async () => {
    const accessLogged = (id: string): boolean => gw.stdout().split('\n').some((l) => l.startsWith('[') && l.includes(id));
    const meshCm = (mesh: string): KObj => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh } });
    await apply(meshCm('accessLogFile: /dev/stdout\n'));
    await waitFor(async () => {
      await http(port, '/', { headers: { host: 'app.test', 'x-request-id': 'mesh-on' } });
      return accessLogged('mesh-on');
    }, APPLY_MS);
    // A ConfigMap `istio` elsewhere is not the mesh config.
    await apply({ ...meshCm(''), metadata: { name: 'istio', namespace: 'default' } });
    await apply(meshCm('accessLogFile: ""\n'));
    await waitFor(async () => {
      const id = `mesh-off-${Date.now()}`;
      await http(port, '/', { headers: { host: 'app.test', 'x-request-id': id } });
      await sleep(50);
      return !accessLogged(id);
    }, APPLY_MS);
  });

  it('the API server going away: traffic keeps flowing and ready stays 200; back, changes apply again', async () => {
    const serving = await upstream('app.test');
    expect(serving).toMatch(/^v\d$/);
    await api.stop();
    for (let i = 0; i < 10; i++) {
      expect(await upstream('app.test')).toBe(serving);
      expect((await gw.admin('/healthz/ready')).status).toBe(200);
      await sleep(100);
    }
    await waitFor(() => gw.logs().includes('Kubernetes API server unreachable'), 3000);
    await api.start();
    await waitFor(() => api.watchCount('virtualservices') > 0, 5000);
    const next = serving === 'v3' ? 'v1' : 'v3';
    await replace(vs('app', 'app.test', next));
    await waitFor(async () => (await upstream('app.test')) === next, APPLY_MS);
    expect(gw.logs()).toContain('Kubernetes API server reachable again');
  });
});

describe('--kubernetes with --config files', () => {
  it('both feed one configuration; the same kind/namespace/name in both is a conflict reported once', async () => {
    const api2 = new KubeApiServer();
    await api2.start();
    const [p2] = (await freePorts(1)) as [number];
    api2.putAll([gateway('gw', p2), ...service('app', { v1: v1.port, v2: v2.port }), vs('from-api', 'api.test', 'v2'), vs('clash', 'clash.test', 'v2')]);
    const g = await startGateway({ files: { 'vs.yaml': yamlDocs(vs('from-file', 'file.test', 'v1'), vs('clash', 'clash.test', 'v1')) }, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, args: ['--log-level', 'info'] });
    try {
      expect((await get('api.test', p2)).json.name).toBe('v2');
      expect((await get('file.test', p2)).json.name).toBe('v1');
      // The file's version serves; the API's is refused, once.
      expect((await get('clash.test', p2)).json.name).toBe('v1');
      await waitFor(() => g.logs().includes('VirtualService/default/clash: duplicate VirtualService/default/clash, first defined at '), 2000);
      api2.put(vs('from-api', 'api.test', 'v1'));
      await waitFor(async () => (await get('api.test', p2)).json.name === 'v1', APPLY_MS);
      expect(g.logs().split('\n').filter((l) => l.includes('duplicate VirtualService/default/clash')).length).toBe(1);
    } finally {
      await g.stop();
      await api2.close();
    }
  });
});

describe('--kubernetes: what the gateway may not read', () => {
  it('a kind RBAC forbids and a CRD group that is not installed are logged once (with the missing rule) and count as empty; the rest works', async () => {
    const api2 = new KubeApiServer({ uninstalled: ['security.istio.io'] });
    await api2.start();
    api2.forbid('networking.istio.io', 'destinationrules', ['list', 'watch']);
    const [p2] = (await freePorts(1)) as [number];
    api2.putAll([gateway('gw', p2), virtualService('direct', ['direct.test'], [{ route: [{ destination: { host: 'backend.example', port: { number: v1.port } } }] }]), {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'backend', namespace: 'default' },
      spec: { hosts: ['backend.example'], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports: [{ number: v1.port, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1' }] },
    }]);
    const g = await startGateway({ files: {}, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, args: ['--log-level', 'info'] });
    try {
      expect((await get('direct.test', p2)).json.name).toBe('v1');
      const rule = 'Missing rule: apiGroups: ["networking.istio.io"], resources: ["destinationrules"], verbs: ["list","watch"] (in a ClusterRole)';
      const rbac = messages(g).filter((m) => m.includes(rule));
      expect(rbac).toHaveLength(1);
      expect(rbac[0]).toContain('destinationrules.networking.istio.io is forbidden: User "system:serviceaccount:istio-system:gatehouse" cannot list resource "destinationrules"');
      for (const kind of ['PeerAuthentication', 'RequestAuthentication', 'AuthorizationPolicy']) {
        expect(messages(g).filter((m) => m.startsWith(`${kind} is not served by the API server (`))).toHaveLength(1);
      }
      // Still working, and said once only.
      api2.put(virtualService('direct', ['direct.test', 'direct2.test'], [{ route: [{ destination: { host: 'backend.example', port: { number: v1.port } } }] }]));
      await waitFor(async () => (await get('direct2.test', p2)).status === 200, APPLY_MS);
      expect(messages(g).filter((m) => m.includes(rule))).toHaveLength(1);
    } finally {
      await g.stop();
      await api2.close();
    }
  });

  it('/healthz/ready is 503 until the first full list of every kind is applied, and nothing is served before', async () => {
    const api2 = new KubeApiServer();
    await api2.start();
    const [p2] = (await freePorts(1)) as [number];
    api2.putAll([gateway('gw', p2), vs('late', 'late.test', 'v1'), ...service('app', { v1: v1.port })]);
    api2.delayList('virtualservices', 2500);
    const g = await startGateway({ files: {}, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, waitReady: false });
    try {
      await waitFor(async () => {
        try {
          return (await g.admin('/healthz/ready')).status === 503;
        } catch {
          return false;
        }
      }, 8000);
      // The other kinds are in, the VirtualServices are not: not ready, no listener yet.
      await waitFor(() => api2.watchCount('gateways') > 0, 8000);
      expect((await g.admin('/healthz/ready')).status).toBe(503);
      await expect(get('late.test', p2)).rejects.toThrow();
      await waitFor(async () => (await g.admin('/healthz/ready')).status === 200, 10_000);
      expect((await get('late.test', p2)).json.name).toBe('v1');
    } finally {
      await g.stop();
      await api2.close();
    }
  });
});

describe('--kubernetes: credentialName Secrets', () => {
  let ca: TestCa;
  beforeAll(() => {
    ca = createCa('rotate');
  });
  afterAll(() => ca?.remove());

  const secretDoc = (cert: { certPem: string; keyPem: string }): KObj => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'site-tls', namespace: 'istio-system' },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': Buffer.from(cert.certPem).toString('base64'), 'tls.key': Buffer.from(cert.keyPem).toString('base64') },
  });

  function handshake(p: number, servername: string): Promise<PeerCertificate> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: p, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
        const c = s.getPeerCertificate();
        s.end();
        resolve(c);
      });
      s.on('error', reject);
      s.setTimeout(3000, () => s.destroy(new Error('handshake timed out')));
    });
  }

  it('a Secret rotated with kubectl apply is served to new TLS handshakes', async () => {
    const one = ca.issue('site-one', { cn: 'one', sans: ['DNS:site.test'] });
    const two = ca.issue('site-two', { cn: 'two', sans: ['DNS:site.test'] });
    const [p2] = (await freePorts(1)) as [number];
    const api2 = new KubeApiServer();
    await api2.start();
    const tlsGw: KObj = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'Gateway',
      metadata: { name: 'tls-gw', namespace: 'default' },
      spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: p2, name: 'https', protocol: 'HTTPS' }, hosts: ['site.test'], tls: { mode: 'SIMPLE', credentialName: 'site-tls' } }] },
    };
    await kubectlOk(api2, ['apply', '-f', '-'], { stdin: yamlDocs(secretDoc(one), tlsGw, virtualService('site', ['site.test'], [{ route: [dest('app', 'v1')] }], { gateways: ['tls-gw'] }), ...service('app', { v1: v1.port })) });
    // A Secret nobody names is not read into the configuration.
    api2.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'unrelated', namespace: 'istio-system' }, type: 'kubernetes.io/tls', data: { 'tls.crt': 'bm90IGEgY2VydA==' } });
    const g = await startGateway({ files: {}, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, args: ['--log-level', 'info'] });
    try {
      expect((await handshake(p2, 'site.test')).subject.CN).toBe('one');
      const r = await kubectl(api2, ['apply', '-f', '-'], { stdin: yamlDocs(secretDoc(two)) });
      expect(r.stdout).toContain('secret/site-tls configured');
      await waitFor(async () => (await handshake(p2, 'site.test')).subject.CN === 'two', APPLY_MS);
      expect(g.logs()).not.toContain('Secret/istio-system/unrelated');
      // A broken replacement is refused; the last good certificate keeps serving.
      await kubectlOk(api2, ['apply', '-f', '-'], { stdin: yamlDocs({ ...secretDoc(two), data: { 'tls.crt': Buffer.from(one.certPem).toString('base64'), 'tls.key': Buffer.from(two.keyPem).toString('base64') } }) });
      await waitFor(() => g.logs().includes('does not match'), APPLY_MS);
      expect((await handshake(p2, 'site.test')).subject.CN).toBe('two');
    } finally {
      await g.stop();
      await api2.close();
    }
  });
});

describe('--kubernetes: command line', () => {
  it('flags: --kubeconfig without --kubernetes, --kubernetes with --xds-address, a bad namespace name are usage errors (exit 2)', async () => {
    const cases: Array<[string[], string]> = [
      [['run', '--config', '/nonexistent', '--kubeconfig', '/k'], '--kubeconfig needs --kubernetes'],
      [['run', '--kubernetes', '--xds-address', '127.0.0.1:1'], '--kubernetes and --xds-address exclude each other'],
      [['run', '--kubernetes', '--watch-namespaces', 'ok,Not_A_Namespace'], '--watch-namespaces: "Not_A_Namespace" is not a namespace name'],
      [['run', '--config', '/nonexistent', '--write-status'], '--write-status needs --kubernetes'],
    ];
    for (const [args, message] of cases) {
      const r = await runCli([...args, '--admin-port', '0']);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stderr).toContain('gatehouse run --kubernetes [--kubeconfig <file>] [--watch-namespaces ns,...] [--cluster-domain cluster.local]');
    }
  });

  it('no credentials, or a kubeconfig that is not there: exit 1 saying so', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gatehouse-home-'));
    try {
      const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home };
      const none = await runCli(['run', '--kubernetes', '--admin-port', '0', '--xds-port', '0', '--workers', '1'], 15_000, env);
      expect(none.code).toBe(1);
      expect(none.stdout + none.stderr).toContain('no Kubernetes credentials: give --kubeconfig <file>, set KUBECONFIG, or run in a pod with a service account');
      const missing = await runCli(['run', '--kubernetes', '--kubeconfig', join(home, 'nope.yaml'), '--admin-port', '0', '--xds-port', '0', '--workers', '1'], 15_000, env);
      expect(missing.code).toBe(1);
      expect(missing.stdout + missing.stderr).toContain(`--kubeconfig ${join(home, 'nope.yaml')}: no such file`);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('an API server that never answers: not ready, and SIGTERM still stops it (exit 0)', async () => {
    const api2 = new KubeApiServer();
    await api2.start();
    const kc = api2.defaultKubeconfig;
    await api2.stop();
    const g = await startGateway({ files: {}, kubeconfig: kc, env: KUBE_ENV, waitReady: false });
    await waitFor(async () => {
      try {
        return (await g.admin('/healthz/ready')).status === 503;
      } catch {
        return false;
      }
    }, 8000);
    g.proc.kill('SIGTERM');
    expect(await g.exited).toBe(0);
    await g.stop();
    await api2.close();
  });

  it('--watch-namespaces: only those namespaces are read (Secrets also in the gateway namespace, the mesh ConfigMap in the root one)', async () => {
    const api2 = new KubeApiServer();
    await api2.start();
    const [p2] = (await freePorts(1)) as [number];
    api2.putAll([
      gateway('gw', p2, ['*'], { namespace: 'team-a' }),
      virtualService('in-a', ['a.test'], [{ route: [{ destination: { host: 'backend.example', port: { number: v1.port } } }] }], { namespace: 'team-a', gateways: ['team-a/gw'] }),
      virtualService('in-c', ['c.test'], [{ route: [{ destination: { host: 'backend.example', port: { number: v1.port } } }] }], { namespace: 'team-c', gateways: ['team-a/gw'] }),
      { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'backend', namespace: 'team-a' }, spec: { hosts: ['backend.example'], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports: [{ number: v1.port, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1' }] } },
    ]);
    const g = await startGateway({ files: {}, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, args: ['--watch-namespaces', 'team-a,team-b'] });
    try {
      expect((await get('a.test', p2)).json.name).toBe('v1');
      expect((await get('c.test', p2)).status).toBe(404);
      // What was listed (before ready, every kind was).
      const listed = new Set(api2.requests.filter((r) => r.method === 'GET' && r.query.watch !== 'true' && r.path.split('/').length > 3).map((r) => r.path.replace(/^\/apis?\/(?:[^/]+\/)?v1\//, '')));
      expect([...listed].filter((p) => p.endsWith('/virtualservices')).sort()).toEqual(['namespaces/team-a/virtualservices', 'namespaces/team-b/virtualservices']);
      expect([...listed].filter((p) => p.endsWith('/secrets')).sort()).toEqual(['namespaces/istio-system/secrets', 'namespaces/team-a/secrets', 'namespaces/team-b/secrets']);
      expect([...listed].filter((p) => p.endsWith('/configmaps'))).toEqual(['namespaces/istio-system/configmaps']);
      expect(listed.has('virtualservices')).toBe(false);
    } finally {
      await g.stop();
      await api2.close();
    }
  });
});

describe('--kubernetes --write-status', () => {
  it("writes Istio's status.validationMessages on refused objects and on objects with warnings, removes them once fixed, and says once when RBAC forbids it", async () => {
    const api2 = new KubeApiServer();
    await api2.start();
    api2.forbid('security.istio.io', 'authorizationpolicies/status', ['update', 'patch']);
    const [p2] = (await freePorts(1)) as [number];
    const backend = { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'backend', namespace: 'default' }, spec: { hosts: ['backend.example'], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports: [{ number: v1.port, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1' }] } };
    const route = (name: string, http: KObj[]): KObj => virtualService(name, [`${name}.test`], http);
    const to = { route: [{ destination: { host: 'backend.example', port: { number: v1.port } } }] };
    const badPolicy = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'bad-policy', namespace: 'istio-system' }, spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: ['not-a-port'] } }] }] } };
    await kubectlOk(api2, ['apply', '-f', '-'], {
      stdin: yamlDocs(gateway('gw', p2), backend, route('fine', [to]), route('broken', [{ match: [{ uri: { regex: '(?=x)' } }], ...to }]), route('shadowed', [to, { name: 'never', ...to }]), badPolicy),
    });
    const g = await startGateway({ files: {}, kubeconfig: api2.defaultKubeconfig, env: KUBE_ENV, args: ['--write-status', '--log-level', 'info'] });
    const statusOf = async (kind: string, name: string, ns = 'default'): Promise<KObj | undefined> => JSON.parse(await kubectlOk(api2, ['get', kind, name, '-n', ns, '-o', 'json'])).status;
    try {
      expect((await get('fine.test', p2)).json.name).toBe('v1');
      await waitFor(async () => (await statusOf('vs', 'broken'))?.validationMessages?.length > 0, APPLY_MS);
      expect((await statusOf('vs', 'broken'))!.validationMessages).toEqual([
        { type: { code: 'IST0106', name: 'SchemaValidationError' }, level: 'ERROR', documentationUrl: 'https://istio.io/latest/docs/reference/config/analysis/ist0106/' },
      ]);
      await waitFor(async () => (await statusOf('vs', 'shadowed'))?.validationMessages?.length > 0, APPLY_MS);
      expect((await statusOf('vs', 'shadowed'))!.validationMessages).toEqual([
        { type: { code: 'IST0130', name: 'VirtualServiceUnreachableRule' }, level: 'WARNING', documentationUrl: 'https://istio.io/latest/docs/reference/config/analysis/ist0130/' },
      ]);
      expect(await statusOf('vs', 'fine')).toBeUndefined();
      // Writing status (and the watch events it causes) built no configuration version beside the first.
      const version = await versionOf(g);
      expect(version).toMatch(/^1-/);
      // Fixed: the messages go.
      await kubectlOk(api2, ['apply', '-f', '-'], { stdin: yamlDocs(route('broken', [to])) });
      await waitFor(async () => (await statusOf('vs', 'broken'))?.validationMessages === undefined, APPLY_MS);
      expect((await get('broken.test', p2)).json.name).toBe('v1');
      expect(await versionOf(g)).not.toBe(version);
      // RBAC forbids writing AuthorizationPolicy status: said once, with the rule.
      const rule = 'Missing rule: apiGroups: ["security.istio.io"], resources: ["authorizationpolicies/status"], verbs: ["update","patch"]';
      await waitFor(() => messages(g).some((m) => m.includes(rule)), APPLY_MS);
      await kubectlOk(api2, ['apply', '-f', '-'], { stdin: yamlDocs({ ...badPolicy, spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: ['still-not'] } }] }] } }) });
      await sleep(500);
      expect(messages(g).filter((m) => m.includes(rule))).toHaveLength(1);
      expect(await statusOf('authorizationpolicy', 'bad-policy', 'istio-system')).toBeUndefined();
    } finally {
      await g.stop();
      await api2.close();
    }
  });
});
