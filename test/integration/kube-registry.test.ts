// `gatehouse run --kubernetes`: Kubernetes Services, EndpointSlices and Pods as the service
// registry, as istiod builds it, end to end. The test API server (test/helpers/kube-apiserver.ts)
// is driven with kubectl; the Pods are real upstream servers on loopback addresses (127.0.0.x:
// Istio keeps one endpoint per address and port name across a Service's slices, so every Pod has
// an address of its own, as in a cluster).
import { Agent } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { KubeApiServer, kubectlOk, type KObj } from '../helpers/kube-apiserver.js';
import { kPod, kService, kSlice, type EndpointSpec } from '../helpers/kube-objects.js';
import { freePorts, http, sleep, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, destinationRule, gateway, virtualService, yamlDocs } from '../helpers/yaml.js';

const APPLY_MS = 5000;
/** Pod name → its address (each Pod its own loopback address). */
const POD_IPS: Record<string, string> = {
  'shop-v1-a': '127.0.0.11',
  'shop-v1-b': '127.0.0.12',
  'shop-v2-a': '127.0.0.13',
  'web-0': '127.0.0.21',
  'web-1': '127.0.0.22',
  'web-2': '127.0.0.23',
  'stateful-0': '127.0.0.31',
  'catalog-0': '127.0.0.41',
};

let api: KubeApiServer;
let gw: GatewayProcess;
let port: number;
/** The port every Pod listens on (its container port `http`). */
let podPort: number;
const pods = new Map<string, Echo>();
/** A ServiceEntry's endpoint (on 127.0.0.1). */
let partner: Echo;

const apply = (...docs: KObj[]) => kubectlOk(api, ['apply', '-f', '-'], { stdin: yamlDocs(...docs) });
const get = (host: string, headers: Record<string, string> = {}) => http(port, '/', { headers: { host, ...headers }, timeoutMs: 3000 });
const upstream = async (host: string, headers: Record<string, string> = {}): Promise<string> => {
  const r = await get(host, headers);
  return r.status === 200 ? (r.json.name as string) : `status ${r.status}`;
};
/** The upstreams that answered `n` requests to `host`, sorted and deduplicated. */
const upstreams = async (host: string, n: number, headers: Record<string, string> = {}): Promise<string[]> => {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add(await upstream(host, headers));
  return [...seen].sort();
};
const pod = (name: string, labels: Record<string, string>) => kPod(name, POD_IPS[name]!, labels, { ports: { http: podPort } });
const ep = (name: string, extra: Partial<EndpointSpec> = {}): EndpointSpec => ({ ip: POD_IPS[name]!, pod: name, ...extra });
/** Service `name`: port 80 named `http`, to the container port named `http` (the slice gives its number). */
const svc = (name: string, opts: Parameters<typeof kService>[2] = {}) => kService(name, [{ name: 'http', port: 80, targetPort: 'http' }], opts);
const slice = (name: string, service: string, endpoints: EndpointSpec[]) => kSlice(name, service, endpoints, [{ name: 'http', port: podPort }]);
const requestsTo = (name: string): number => pods.get(name)!.requests.length;

/** Echo servers, one per Pod, all on one port (retried should that port be taken on some address). */
async function startPods(): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    [podPort] = (await freePorts(1)) as [number];
    try {
      for (const [name, ip] of Object.entries(POD_IPS)) pods.set(name, await startEcho(name, { host: ip, port: podPort }));
      return;
    } catch (e) {
      await Promise.all([...pods.values()].map((p) => p.close()));
      pods.clear();
      if (attempt >= 5) throw e;
    }
  }
}

beforeAll(async () => {
  api = new KubeApiServer({ bookmarkIntervalMs: 300 });
  await api.start();
  await startPods();
  partner = await startEcho('partner');
  [port] = (await freePorts(1)) as [number];
  await apply(
    gateway('gw', port),
    // shop: two v1 Pods, one v2 Pod; subsets by the Pods' `version` label.
    svc('shop'),
    pod('shop-v1-a', { app: 'shop', version: 'v1' }),
    pod('shop-v1-b', { app: 'shop', version: 'v1' }),
    pod('shop-v2-a', { app: 'shop', version: 'v2' }),
    slice('shop-abcde', 'shop', [ep('shop-v1-a'), ep('shop-v1-b'), ep('shop-v2-a')]),
    destinationRule('shop', 'shop', { v1: { version: 'v1' }, v2: { version: 'v2' } }),
    virtualService('shop', ['shop.test'], [{ match: [{ headers: { 'x-version': { exact: 'v2' } } }], route: [dest('shop', 'v2')] }, { route: [dest('shop', 'v1')] }]),
    virtualService('shop-all', ['shop-all.test'], [{ route: [dest('shop')] }]),
  );
  gw = await startGateway({ files: {}, kubeconfig: api.defaultKubeconfig, args: ['--log-level', 'info'] });
});

afterAll(async () => {
  await gw?.stop();
  await api?.close();
  await Promise.all([...pods.values(), partner].map((p) => p?.close()));
});

describe('--kubernetes: Services, EndpointSlices and Pods are the service registry', () => {
  it('a DestinationRule subset selects the Service’s endpoints by their Pod’s labels; relabelling a Pod with kubectl moves it between subsets', async () => {
    expect(await upstreams('shop.test', 20)).toEqual(['shop-v1-a', 'shop-v1-b']);
    expect(await upstreams('shop.test', 10, { 'x-version': 'v2' })).toEqual(['shop-v2-a']);
    expect(await upstreams('shop-all.test', 30)).toEqual(['shop-v1-a', 'shop-v1-b', 'shop-v2-a']);

    await kubectlOk(api, ['label', 'pod', 'shop-v1-b', 'version=v2', '--overwrite']);
    await waitFor(async () => (await upstreams('shop.test', 10, { 'x-version': 'v2' })).includes('shop-v1-b'), APPLY_MS);
    expect(await upstreams('shop.test', 20, { 'x-version': 'v2' })).toEqual(['shop-v1-b', 'shop-v2-a']);
    expect(await upstreams('shop.test', 20)).toEqual(['shop-v1-a']);
  });

  it('endpoints scaled up and down with kubectl under load: no request fails, traffic reaches the new endpoints and leaves the removed ones', async () => {
    const web = (endpoints: EndpointSpec[]) => slice('web-xyz12', 'web', endpoints);
    await apply(svc('web'), pod('web-0', { app: 'web' }), web([ep('web-0')]), virtualService('web', ['web.test'], [{ route: [dest('web')] }]));
    await waitFor(async () => (await upstream('web.test')) === 'web-0', APPLY_MS);

    // A bounded load: 4 clients on keep-alive connections, back to back, until stopped (at most 60 s).
    let running = true;
    const statuses = new Map<string, number>();
    const client = async (): Promise<void> => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const deadline = Date.now() + 60_000;
      while (running && Date.now() < deadline) {
        const outcome = await http(port, '/', { headers: { host: 'web.test' }, agent, timeoutMs: 5000 }).then(
          (r) => String(r.status),
          (e: Error) => `error ${e.message}`,
        );
        statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1);
      }
      agent.destroy();
    };
    const load = Promise.all([client(), client(), client(), client()]);
    try {
      // Scaled up: two new Pods start, then the EndpointSlice controller adds them.
      await apply(pod('web-1', { app: 'web' }), pod('web-2', { app: 'web' }));
      await apply(web([ep('web-0'), ep('web-1'), ep('web-2')]));
      await waitFor(() => requestsTo('web-1') > 20 && requestsTo('web-2') > 20, APPLY_MS);

      // Scaled down: web-2 terminates (ready false, serving while it drains), then leaves the slice,
      // its Pod is deleted, its server stops.
      await apply(web([ep('web-0'), ep('web-1'), ep('web-2', { ready: false, serving: true, terminating: true })]));
      const settled = async (name: string): Promise<number> => {
        const n = requestsTo(name);
        await sleep(300);
        return requestsTo(name) === n ? n + 1 : 0;
      };
      const web2 = (await waitFor(() => settled('web-2'), APPLY_MS)) - 1;
      await apply(web([ep('web-0'), ep('web-1')]));
      await kubectlOk(api, ['delete', 'pod', 'web-2']);
      await pods.get('web-2')!.close();

      // web-0 goes too: everything goes to web-1.
      await apply(web([ep('web-1')]));
      const web0 = (await waitFor(() => settled('web-0'), APPLY_MS)) - 1;
      const web1 = requestsTo('web-1');
      await waitFor(() => requestsTo('web-1') > web1 + 100, APPLY_MS);
      expect(requestsTo('web-0')).toBe(web0);
      expect(requestsTo('web-2')).toBe(web2);
    } finally {
      running = false;
      await load;
    }
    expect(Object.fromEntries(statuses)).toEqual({ '200': expect.any(Number) });
    expect(statuses.get('200')).toBeGreaterThan(200);
  });

  it('a headless Service (clusterIP None) is routed to its Pods’ endpoints, subsets included', async () => {
    await apply(
      svc('stateful', { clusterIP: 'None' }),
      pod('stateful-0', { app: 'stateful', version: 'v1' }),
      slice('stateful-k2j4x', 'stateful', [ep('stateful-0')]),
      destinationRule('stateful', 'stateful', { v1: { version: 'v1' }, v9: { version: 'v9' } }),
      virtualService('stateful', ['stateful.test'], [{ match: [{ headers: { 'x-version': { exact: 'v9' } } }], route: [dest('stateful', 'v9')] }, { route: [dest('stateful', 'v1')] }]),
    );
    await waitFor(async () => (await upstream('stateful.test')) === 'stateful-0', APPLY_MS);
    // A subset no Pod is labelled for has no endpoint: 503, as Envoy answers.
    expect(await upstream('stateful.test', { 'x-version': 'v9' })).toBe('status 503');
  });

  it('an ExternalName Service is an alias of the host it names (Istio ≥ 1.21): a Service, a ServiceEntry host, or nothing (503)', async () => {
    await apply(
      svc('shop-alias', { type: 'ExternalName', externalName: 'shop.default.svc.cluster.local' }),
      svc('partner', { type: 'ExternalName', externalName: 'api.partner.example' }),
      svc('nowhere', { type: 'ExternalName', externalName: 'unknown.example.org' }),
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'ServiceEntry',
        metadata: { name: 'partner-api', namespace: 'default' },
        spec: { hosts: ['api.partner.example'], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1', ports: { http: partner.port } }] },
      },
      virtualService('aliases', ['alias.test'], [
        { match: [{ uri: { prefix: '/partner' } }], route: [dest('partner')] },
        { match: [{ uri: { prefix: '/nowhere' } }], route: [dest('nowhere')] },
        { route: [dest('shop-alias')] },
      ]),
    );
    const at = async (path: string): Promise<string> => {
      const r = await http(port, path, { headers: { host: 'alias.test' }, timeoutMs: 3000 });
      return r.status === 200 ? (r.json.name as string) : `status ${r.status}`;
    };
    await waitFor(async () => (await at('/')).startsWith('shop-'), APPLY_MS);
    await waitFor(async () => (await at('/partner')) === 'partner', APPLY_MS);
    expect(await at('/nowhere')).toBe('status 503');
    await waitFor(() => gw.logs().includes('Service/default/nowhere: spec.externalName: ExternalName unknown.example.org is neither a Service nor a ServiceEntry host here'), APPLY_MS);
  });

  it('a Kubernetes Service wins its host over a ServiceEntry declaring it, whatever their ages (Istio); without the Service the ServiceEntry serves', async () => {
    const host = 'catalog.default.svc.cluster.local';
    const se: KObj = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'catalog-se', namespace: 'default' },
      spec: { hosts: [host], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1', ports: { http: partner.port } }] },
    };
    await apply(se, virtualService('catalog', ['catalog.test'], [{ route: [dest('catalog')] }]));
    await waitFor(async () => (await upstream('catalog.test')) === 'partner', APPLY_MS);

    // The Service comes later, and wins.
    await apply(svc('catalog'), pod('catalog-0', { app: 'catalog' }), slice('catalog-8fj2k', 'catalog', [ep('catalog-0')]));
    await waitFor(async () => (await upstream('catalog.test')) === 'catalog-0', APPLY_MS);
    await waitFor(() => gw.logs().includes(`ServiceEntry/default/catalog-se: spec.hosts[0]: host ${host} is also Kubernetes Service default/catalog, which takes precedence`), APPLY_MS);

    // The ServiceEntry made again, younger than the Service (with a VirtualService change, to see
    // when that configuration serves): the Service still wins.
    await kubectlOk(api, ['delete', 'serviceentry', 'catalog-se']);
    await apply(se, virtualService('catalog', ['catalog.test'], [{ route: [dest('catalog')], headers: { response: { set: { 'x-generation': '2' } } } }]));
    await waitFor(async () => (await get('catalog.test')).headers['x-generation'] === '2', APPLY_MS);
    expect(await upstreams('catalog.test', 10)).toEqual(['catalog-0']);

    // The Service deleted: the ServiceEntry serves its host.
    await kubectlOk(api, ['delete', 'service', 'catalog']);
    await waitFor(async () => (await upstream('catalog.test')) === 'partner', APPLY_MS);
  });
});
