// The pieces under `--kubernetes`, against the test API server: where the credentials come from
// (--kubeconfig, KUBECONFIG, the in-cluster service account), and the informer's semantics - list
// then watch with bookmarks, resume after a break without listing, relist after 410 with only the
// difference reported, 403 and 404 reported once and counted as empty.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Backoff } from '../../src/config/kubernetes/backoff.js';
import { KubeClient } from '../../src/config/kubernetes/client.js';
import { connect, KubeCredentialsError } from '../../src/config/kubernetes/credentials.js';
import { watchedKinds, type WatchedKind } from '../../src/config/kubernetes/kinds.js';
import { Reflector } from '../../src/config/kubernetes/reflector.js';
import { KubeApiServer } from '../helpers/kube-apiserver.js';
import { sleep, waitFor } from '../helpers/net.js';

let api: KubeApiServer;
let tmp: string;

beforeAll(async () => {
  api = new KubeApiServer({ bookmarkIntervalMs: 200 });
  await api.start();
  tmp = mkdtempSync(join(tmpdir(), 'gatehouse-cred-'));
});

afterAll(async () => {
  await api?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const kind = (name: string): WatchedKind => watchedKinds().find((k) => k.kind === name)!;
/** A Service whose port number stands for its content. */
const svc = (name: string, port: number, ns = 'informer') => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { ports: [{ name: 'http', port }] } });

describe('credentials', () => {
  it('--kubeconfig first, then KUBECONFIG: server, CA and token as kubectl uses them', async () => {
    const viaFlag = await connect({ kubeconfig: api.defaultKubeconfig, env: {} });
    expect(viaFlag.server).toBe(api.url);
    expect(viaFlag.origin).toBe(`--kubeconfig ${api.defaultKubeconfig} (context test)`);
    expect((await new KubeClient(viaFlag).get('/api/v1/namespaces')).status).toBe(200);
    const viaEnv = await connect({ env: { KUBECONFIG: `${join(tmp, 'missing.yaml')}:${api.defaultKubeconfig}` } });
    expect(viaEnv.origin).toContain('KUBECONFIG=');
    expect((await new KubeClient(viaEnv).get('/api/v1/namespaces')).status).toBe(200);
  });

  it('in a pod: the service account token and the cluster CA', async () => {
    const dir = join(tmp, 'pod');
    const sa = join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), api.token);
    writeFileSync(join(sa, 'ca.crt'), api.ca.certPem);
    writeFileSync(join(sa, 'namespace'), 'istio-system');
    const c = await connect({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, serviceAccountPrefix: dir });
    expect(c.origin).toContain('the in-cluster service account');
    expect((await new KubeClient(c).get('/api/v1/namespaces')).status).toBe(200);
    // A wrong token is the server's 401, not a crash.
    writeFileSync(join(sa, 'token'), 'wrong');
    const c2 = await connect({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, serviceAccountPrefix: dir });
    expect((await new KubeClient(c2).get('/api/v1/namespaces')).status).toBe(401);
  });

  it('nothing to go by: a clear error', async () => {
    await expect(connect({ env: { HOME: tmp } })).rejects.toThrow(KubeCredentialsError);
    await expect(connect({ kubeconfig: join(tmp, 'nope'), env: {} })).rejects.toThrow(`--kubeconfig ${join(tmp, 'nope')}: no such file`);
  });
});

describe('informer (reflector)', () => {
  function reflector(k: WatchedKind, ns: string | null) {
    const events = { changed: 0, synced: 0, forbidden: [] as string[], absent: 0 };
    return connect({ kubeconfig: api.defaultKubeconfig, env: {} }).then((c) => {
      const r = new Reflector(
        new KubeClient(c),
        k,
        'v1',
        ns,
        {
          changed: () => events.changed++,
          synced: () => events.synced++,
          forbidden: (s) => events.forbidden.push(s?.message ?? ''),
          absent: () => events.absent++,
          connection: () => undefined,
          debug: () => undefined,
        },
        { backoff: new Backoff(20, 200), recheckMs: 100_000, pageSize: 2 },
      );
      r.start();
      return { r, events };
    });
  }
  const names = (r: Reflector): string[] => [...r.items.values()].map((o) => `${o.metadata.name}=${(o.body as { spec: { ports: Array<{ port: number }> } }).spec.ports[0]!.port}`).sort();

  it('lists (in pages), watches from the list, resumes after a break without listing, relists after 410 reporting only the difference', async () => {
    for (let i = 0; i < 5; i++) api.put(svc(`c${i}`, 80));
    const { r, events } = await reflector(kind('Service'), 'informer');
    try {
      await waitFor(() => r.synced, 3000);
      expect(events.synced).toBe(1);
      expect(names(r)).toHaveLength(5);
      expect(events.changed).toBe(0);
      const listPages = api.requests.filter((q) => q.path === '/api/v1/namespaces/informer/services' && q.query.watch !== 'true');
      expect(listPages.map((q) => q.query.limit)).toEqual(['2', '2', '2']);

      api.put(svc('c0', 81));
      await waitFor(() => names(r).includes('c0=81'), 3000);
      expect(events.changed).toBe(1);
      // A no-op write (the same content, as `kubectl apply` of the same file) is no change.
      api.put(svc('c0', 81));

      // A break: resumed from the last resourceVersion, the change made meanwhile arrives.
      await waitFor(() => api.watchCount('services') > 0, 3000);
      api.breakWatches('services');
      api.put(svc('c1', 81));
      await waitFor(() => names(r).includes('c1=81'), 3000);
      expect(events.changed).toBe(2);
      const lists = (): number => api.requests.filter((q) => q.path === '/api/v1/namespaces/informer/services' && q.query.watch !== 'true' && !q.query.continue).length;
      expect(lists()).toBe(1);

      // Away long enough for the history to be compacted: 410, relist, and only what changed counts.
      await waitFor(() => api.watchCount('services') > 0, 3000);
      const before = events.changed;
      api.breakWatches('services');
      api.put(svc('c2', 82));
      api.remove('v1', 'Service', 'informer', 'c3');
      api.compact();
      await waitFor(() => lists() === 2 && !names(r).some((n) => n.startsWith('c3=')), 3000);
      expect(names(r)).toEqual(['c0=81', 'c1=81', 'c2=82', 'c4=80']);
      expect(events.changed).toBe(before + 1);
      expect(api.requests.some((q) => q.query.watch === 'true' && q.query.allowWatchBookmarks === 'true')).toBe(true);

      // A relist that finds nothing new reports nothing.
      await waitFor(() => api.watchCount('services') > 0, 3000);
      const quiet = events.changed;
      api.put(svc('elsewhere', 80, 'other-namespace'));
      api.compact();
      api.breakWatches('services');
      await waitFor(() => lists() === 3, 3000);
      await sleep(200);
      expect(events.changed).toBe(quiet);
    } finally {
      await r.stop();
    }
  });

  it('403: reported once, counts as empty, synced; 404 (no CRD): the same', async () => {
    api.forbid('', 'secrets', ['list', 'watch'], 'locked');
    const locked = await reflector(kind('Secret'), 'locked');
    const other = new KubeApiServer({ uninstalled: ['networking.istio.io'] });
    await other.start();
    try {
      await waitFor(() => locked.r.synced, 3000);
      expect(locked.events.forbidden).toEqual(['secrets is forbidden: User "system:serviceaccount:istio-system:gatehouse" cannot list resource "secrets" in API group "" in the namespace "locked"']);
      expect(locked.r.items.size).toBe(0);
      expect(locked.r.state).toBe('forbidden');
      const c = await connect({ kubeconfig: other.defaultKubeconfig, env: {} });
      const events = { absent: 0, synced: 0 };
      const vs = new Reflector(new KubeClient(c), kind('VirtualService'), 'v1', null, { changed: () => undefined, synced: () => events.synced++, forbidden: () => undefined, absent: () => events.absent++, connection: () => undefined, debug: () => undefined }, { recheckMs: 100_000 });
      vs.start();
      await waitFor(() => vs.synced, 3000);
      expect(events).toEqual({ absent: 1, synced: 1 });
      await vs.stop();
    } finally {
      await locked.r.stop();
      await other.close();
      api.allow('', 'secrets');
    }
  });
});

describe('backoff', () => {
  it('doubles up to its maximum, each wait drawn between half and one and a half times the step', () => {
    const lows = new Backoff(100, 1000, () => 0);
    expect([1, 2, 3, 4, 5, 6].map(() => lows.next())).toEqual([50, 100, 200, 400, 500, 500]);
    const highs = new Backoff(100, 1000, () => 0.999);
    expect([1, 2, 3, 4, 5].map(() => highs.next())).toEqual([150, 300, 600, 1000, 1000]);
    highs.reset();
    expect(highs.next()).toBe(150);
  });
});
