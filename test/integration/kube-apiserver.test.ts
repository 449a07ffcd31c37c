// The test Kubernetes API server (test/helpers/kube-apiserver.ts) is only worth what real clients
// make of it: these tests drive it with kubectl (v1.32) and @kubernetes/client-node, and check
// the protocol as the API conventions describe it (resourceVersion, watch events, bookmarks,
// 410 Expired, Status objects, discovery, RBAC 403, a CRD group that is not installed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer, kubectl, kubectlOk, type KObj } from '../helpers/kube-apiserver.js';
import { sleep, waitFor } from '../helpers/net.js';

// Loaded by name at run time, as the product loads it (only with --kubernetes).
const CLIENT_NODE = '@kubernetes/client-node';
type K8s = typeof import('@kubernetes/client-node');

let api: KubeApiServer;
let k8s: K8s;

const vsYaml = (name: string, host: string, extra = ''): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${name}
  namespace: default${extra}
spec:
  hosts: [${host}]
  http:
  - route:
    - destination: {host: backend}
`;

beforeAll(async () => {
  api = new KubeApiServer({ bookmarkIntervalMs: 200 });
  await api.start();
  k8s = (await import(CLIENT_NODE)) as K8s;
});

afterAll(async () => {
  await api?.close();
});

function kubeConfig(): InstanceType<K8s['KubeConfig']> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(api.defaultKubeconfig);
  return kc;
}

describe('test API server driven by kubectl', () => {
  it('apply creates, get -o json lists with the collection resourceVersion, apply again is unchanged', async () => {
    expect(await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('k-apply', 'a.test') })).toContain('virtualservice.networking.istio.io/k-apply created');
    const list = JSON.parse(await kubectlOk(api, ['get', 'virtualservices', '-o', 'json'])) as KObj;
    const item = list.items.find((i: KObj) => i.metadata.name === 'k-apply');
    expect(item.apiVersion).toBe('networking.istio.io/v1');
    expect(item.spec.hosts).toEqual(['a.test']);
    expect(Number(item.metadata.resourceVersion)).toBeGreaterThan(0);
    expect(item.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    const rv = api.resourceVersion;
    expect(await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('k-apply', 'a.test') })).toContain('unchanged');
    expect(api.resourceVersion).toBe(rv);
    expect(await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('k-apply', 'b.test') })).toContain('configured');
    const after = JSON.parse(await kubectlOk(api, ['get', 'vs', 'k-apply', '-o', 'json'])) as KObj;
    expect(after.spec.hosts).toEqual(['b.test']);
    expect(Number(after.metadata.resourceVersion)).toBe(rv + 1);
    expect(after.metadata.generation).toBe(2);
  });

  it('create answers AlreadyExists the second time; replace with a stale resourceVersion is a Conflict; delete removes', async () => {
    await kubectlOk(api, ['create', '-f', '-'], { stdin: vsYaml('k-crud', 'c.test') });
    const again = await kubectl(api, ['create', '-f', '-'], { stdin: vsYaml('k-crud', 'c.test') });
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('Error from server (AlreadyExists)');
    expect(again.stderr).toContain('virtualservices.networking.istio.io "k-crud" already exists');
    const current = JSON.parse(await kubectlOk(api, ['get', 'vs', 'k-crud', '-o', 'json'])) as KObj;
    const oldRv = current.metadata.resourceVersion as string;
    expect(await kubectlOk(api, ['replace', '-f', '-'], { stdin: vsYaml('k-crud', 'd.test') })).toContain('replaced');
    const stale = await kubectl(api, ['replace', '-f', '-'], { stdin: vsYaml('k-crud', 'e.test', `\n  resourceVersion: "${oldRv}"`) });
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('Error from server (Conflict)');
    expect(stale.stderr).toContain('the object has been modified; please apply your changes to the latest version and try again');
    expect(await kubectlOk(api, ['delete', '-f', '-'], { stdin: vsYaml('k-crud', 'd.test') })).toContain('"k-crud" deleted');
    const gone = await kubectl(api, ['get', 'vs', 'k-crud']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('Error from server (NotFound): virtualservices.networking.istio.io "k-crud" not found');
  });

  it('discovery: api-resources lists Istio kinds at their preferred version; an older version serves the same object', async () => {
    const out = await kubectlOk(api, ['api-resources', '--api-group', 'networking.istio.io']);
    expect(out).toMatch(/virtualservices\s+vs\s+networking\.istio\.io\/v1\s+true\s+VirtualService/);
    await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('k-versions', 'v.test') });
    const old = JSON.parse(await kubectlOk(api, ['get', 'virtualservices.v1alpha3.networking.istio.io', 'k-versions', '-o', 'json'])) as KObj;
    expect(old.apiVersion).toBe('networking.istio.io/v1alpha3');
    expect(old.spec.hosts).toEqual(['v.test']);
  });

  it('Secrets and ConfigMaps by manifest (apply uses a strategic merge patch for built-in kinds)', async () => {
    const secret = (v: string): string => `apiVersion: v1\nkind: Secret\nmetadata: {name: k-secret, namespace: default}\ntype: Opaque\nstringData: {key: ${v}}\n`;
    await kubectlOk(api, ['apply', '-f', '-'], { stdin: secret('one') });
    expect(await kubectlOk(api, ['apply', '-f', '-'], { stdin: secret('two') })).toContain('configured');
    const s = JSON.parse(await kubectlOk(api, ['get', 'secret', 'k-secret', '-o', 'json'])) as KObj;
    expect(s.stringData.key).toBe('two');
  });

  it('Secrets: at most 1 MiB of data (422 Invalid beyond, as core validation refuses it) and valid keys', async () => {
    const secret = (name: string, bytes: number, key = 'blob'): string =>
      JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: 'default' }, type: 'Opaque', data: { [key]: Buffer.alloc(bytes, 7).toString('base64') } });
    await kubectlOk(api, ['create', '-f', '-'], { stdin: secret('just-fits', 1024 * 1024) });
    const over = await kubectl(api, ['create', '-f', '-'], { stdin: secret('too-big', 1024 * 1024 + 1) });
    expect(over.code).toBe(1);
    expect(over.stderr).toContain('Secret "too-big" is invalid: data: Too long: must have at most 1048576 bytes');
    const badKey = await kubectl(api, ['create', '-f', '-'], { stdin: secret('bad-key', 10, 'a/b') });
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toContain('Secret "bad-key" is invalid: data[a/b]: Invalid value: "a/b": a valid config key must consist of alphanumeric characters');
  });

  it('RBAC: a forbidden list is a 403 Forbidden Status worded as the real API server words it', async () => {
    const other = new KubeApiServer();
    await other.start();
    try {
      other.forbid('networking.istio.io', 'virtualservices', ['list', 'watch']);
      const r = await kubectl(other, ['get', 'virtualservices']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `Error from server (Forbidden): virtualservices.networking.istio.io is forbidden: User "system:serviceaccount:istio-system:gatehouse" cannot list resource "virtualservices" in API group "networking.istio.io" in the namespace "default"`,
      );
      // Other kinds still answer.
      expect((await kubectl(other, ['get', 'destinationrules'])).code).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('a CRD group that is not installed is absent from discovery and 404 on its paths', async () => {
    const other = new KubeApiServer({ uninstalled: ['security.istio.io'] });
    await other.start();
    try {
      const r = await kubectl(other, ['get', 'authorizationpolicies']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`the server doesn't have a resource type "authorizationpolicies"`);
      const raw = await kubectl(other, ['get', '--raw', '/apis/security.istio.io/v1/namespaces/default/authorizationpolicies']);
      expect(raw.code).toBe(1);
      expect(raw.stderr).toContain('NotFound');
      expect((await kubectl(other, ['get', 'virtualservices'])).code).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('a wrong token is 401 Unauthorized', async () => {
    const r = await kubectl(api, ['get', 'vs'], { kubeconfig: api.kubeconfig({ token: 'not-the-token' }) });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Unauthorized|must be logged in/);
  });
});

describe('test API server driven by @kubernetes/client-node', () => {
  it('lists with a resourceVersion, pages with limit/continue, and watches from it (ADDED, MODIFIED, DELETED, BOOKMARK)', async () => {
    for (let i = 0; i < 5; i++) api.put({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: `page-${i}`, namespace: 'paging' }, spec: { host: `h${i}` } });
    const custom = kubeConfig().makeApiClient(k8s.CustomObjectsApi);
    const first = (await custom.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: 'paging', plural: 'destinationrules', limit: 2 })) as KObj;
    expect(first.items.map((i: KObj) => i.metadata.name)).toEqual(['page-0', 'page-1']);
    expect(first.metadata.remainingItemCount).toBe(3);
    // A change between pages is not seen: the pages are one consistent list.
    api.put({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'page-9', namespace: 'paging' }, spec: { host: 'h9' } });
    const rest = (await custom.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: 'paging', plural: 'destinationrules', _continue: first.metadata.continue })) as KObj;
    expect(rest.items.map((i: KObj) => i.metadata.name)).toEqual(['page-2', 'page-3', 'page-4']);
    expect(rest.metadata.resourceVersion).toBe(first.metadata.resourceVersion);

    const listed = (await custom.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: 'default', plural: 'virtualservices' })) as KObj;
    const from = listed.metadata.resourceVersion as string;
    const events: Array<{ type: string; name?: string; rv: string }> = [];
    let done: unknown = 'open';
    const controller = await new k8s.Watch(kubeConfig()).watch(
      '/apis/networking.istio.io/v1/namespaces/default/virtualservices',
      { resourceVersion: from, allowWatchBookmarks: true },
      (type: string, obj: KObj) => events.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion }),
      (err: unknown) => (done = err),
    );
    await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('w-1', 'w.test') });
    await kubectlOk(api, ['apply', '-f', '-'], { stdin: vsYaml('w-1', 'w2.test') });
    await kubectlOk(api, ['delete', 'vs', 'w-1']);
    await waitFor(() => events.some((e) => e.type === 'DELETED') && events.some((e) => e.type === 'BOOKMARK'), 5000);
    const mine = events.filter((e) => e.name === 'w-1');
    expect(mine.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    // Revisions only grow, and a bookmark carries the newest one.
    const rvs = mine.map((e) => Number(e.rv));
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
    await waitFor(() => events.some((e) => e.type === 'BOOKMARK' && Number(e.rv) >= rvs[2]!), 3000);
    expect(done).toBe('open');
    controller.abort();
  });

  it("client-node's informer (ListWatch) follows adds, updates and deletes", async () => {
    const kc = kubeConfig();
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const path = '/api/v1/namespaces/inf/configmaps';
    const informer = k8s.makeInformer(kc, path, () => core.listNamespacedConfigMap({ namespace: 'inf' }));
    const seen: string[] = [];
    informer.on('add', (o: KObj) => seen.push(`add ${o.metadata.name}`));
    informer.on('update', (o: KObj) => seen.push(`update ${o.metadata.name} ${o.data?.k}`));
    informer.on('delete', (o: KObj) => seen.push(`delete ${o.metadata.name}`));
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'before', namespace: 'inf' }, data: { k: '0' } });
    await informer.start();
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cm', namespace: 'inf' }, data: { k: '1' } });
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cm', namespace: 'inf' }, data: { k: '2' } });
    api.remove('v1', 'ConfigMap', 'inf', 'cm');
    await waitFor(() => seen.includes('delete cm'), 5000);
    expect(seen).toEqual(['add before', 'add cm', 'update cm 2', 'delete cm']);
    await informer.stop();
  });

  it('a watch from a compacted revision gets an ERROR event with a 410 Expired Status', async () => {
    const before = String(api.resourceVersion);
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'compact-1', namespace: 'default' }, data: {} });
    api.compact();
    const events: Array<{ type: string; obj: KObj }> = [];
    let ended = false;
    await new k8s.Watch(kubeConfig()).watch('/api/v1/namespaces/default/configmaps', { resourceVersion: before }, (type: string, obj: KObj) => events.push({ type, obj }), () => (ended = true));
    await waitFor(() => ended, 3000);
    expect(events).toHaveLength(1);
    expect(events[0]!.type).toBe('ERROR');
    expect(events[0]!.obj).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410 });
    expect(events[0]!.obj.message).toMatch(/^too old resource version: \d+ \(\d+\)$/);
  });

  it('a selector sees an object leave it as DELETED and enter it as ADDED', async () => {
    const events: string[] = [];
    const from = String(api.resourceVersion);
    const ctl = await new k8s.Watch(kubeConfig()).watch('/api/v1/namespaces/default/configmaps', { resourceVersion: from, labelSelector: 'team=a' }, (type: string, obj: KObj) => events.push(`${type} ${obj.metadata.name}`), () => undefined);
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'sel', namespace: 'default', labels: { team: 'a' } }, data: {} });
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'sel', namespace: 'default', labels: { team: 'b' } }, data: {} });
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'sel', namespace: 'default', labels: { team: 'a' } }, data: { x: '1' } });
    await waitFor(() => events.length >= 3, 3000);
    expect(events).toEqual(['ADDED sel', 'DELETED sel', 'ADDED sel']);
    ctl.abort();
  });

  it('faults: a broken watch ends the stream; a stopped server refuses; restarted on its port it keeps its objects and revisions', async () => {
    let ended: unknown = 'open';
    await new k8s.Watch(kubeConfig()).watch('/api/v1/namespaces/default/configmaps', { resourceVersion: String(api.resourceVersion) }, () => undefined, (err: unknown) => (ended = err ?? 'closed'));
    await waitFor(() => api.watchCount('configmaps') > 0, 3000);
    expect(api.breakWatches('configmaps')).toBeGreaterThan(0);
    await waitFor(() => ended !== 'open', 3000);

    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'survivor', namespace: 'default' }, data: { a: '1' } });
    const rv = api.resourceVersion;
    const port = api.port;
    await api.stop();
    const down = await kubectl(api, ['get', 'configmap', 'survivor'], { timeoutMs: 10_000 });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('was refused');
    await sleep(50);
    await api.start();
    expect(api.port).toBe(port);
    const cm = JSON.parse(await kubectlOk(api, ['get', 'configmap', 'survivor', '-o', 'json'])) as KObj;
    expect(cm.data).toEqual({ a: '1' });
    expect(Number(cm.metadata.resourceVersion)).toBe(rv);
  });
});
