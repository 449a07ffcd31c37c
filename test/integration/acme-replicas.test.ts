// ACME with several replicas (`gatehouse run --kubernetes` twice against one test API server, both
// selected by one ACME-annotated Gateway), against Debian's pebble: the Lease `gatehouse-acme`
// elects the replica that orders, the Secret `gatehouse-acme` holds the account key, the
// certificates and the HTTP-01 answers, and every replica serves from it.
// Replica A listens on 127.0.0.1 and replica B on 127.0.0.2 (both loopback), on the same ports: a
// handshake reaches the replica the test chooses, and pebble's validator (which resolves every name
// to 127.0.0.1) always reaches A - so a challenge of an order B places is answered by A, from the
// Secret, as a load balancer in front of the replicas would make it happen.
// The Lease is short here (GATEHOUSE_ACME_LEASE_SECONDS=4,0.25: 4 s, renewed every 250 ms, given
// up after 2.7 s without a renewal; long enough that a replica stalled on a busy machine keeps it).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, ROOT, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { KubeApiServer, kubectlOk, type KObj } from '../helpers/kube-apiserver.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePorts, sleep, waitFor } from '../helpers/net.js';
import { startPebble, type Pebble } from '../helpers/pebble.js';
import { yamlDocs } from '../helpers/yaml.js';

const NS = 'istio-system';
const LEASE = 4;
let work: string;
let pebble: Pebble;
let P: { https: number; https2: number; https3: number; https4: number; https5: number };
/** The Secret's data once the two replicas stored the first certificate (for the last scenario). */
let storedData: Record<string, string> = {};
let storedSerial = '';
const gateways: GatewayProcess[] = [];

function handshake(host: string, port: number, servername: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, servername, rejectUnauthorized: false }, () => {
      const c = s.getPeerCertificate();
      s.end();
      resolve(c);
    });
    s.on('error', reject);
    s.setTimeout(3000, () => s.destroy(new Error('handshake timed out')));
  });
}

const field = (x: unknown, k: string): string | undefined => (x as Record<string, string> | undefined)?.[k];
const fromPebble = (c: PeerCertificate): boolean => field(c.issuer, 'CN')?.startsWith('Pebble Intermediate CA') === true;
const isPlaceholder = (c: PeerCertificate): boolean => field(c.subject, 'O') === 'Gatehouse ACME placeholder';

/** The certificate a replica serves once it is pebble's. */
const issued = (host: string, port: number, name: string, timeoutMs = 15_000): Promise<PeerCertificate> =>
  waitFor(async () => {
    const c = await handshake(host, port, name);
    return fromPebble(c) ? c : undefined;
  }, timeoutMs, 100);

/** An ACME-annotated Gateway; the first also opens the HTTP port pebble validates on. */
function acmeGateway(name: string, port: number, host: string, http = false): KObj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: 'default', annotations: { 'gatehouse.io/acme-directory': pebble.directory, 'gatehouse.io/acme-email': 'ops@example.com', 'gatehouse.io/acme-ca-file': pebble.listenerCertFile } },
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [
        { port: { number: port, name: 'https', protocol: 'HTTPS' }, hosts: [host], tls: { mode: 'SIMPLE', credentialName: `${name}-cert` } },
        ...(http ? [{ port: { number: pebble.httpPort, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] : []),
      ],
    },
  };
}

async function replica(api: KubeApiServer, name: string, bind: string, args: string[] = []): Promise<GatewayProcess> {
  const g = await startGateway({
    files: {},
    kubeconfig: api.defaultKubeconfig,
    env: { POD_NAME: name, GATEHOUSE_ACME_LEASE_SECONDS: `${LEASE},0.25`, GATEHOUSE_STATE_DIR: join(work, name), GATEHOUSE_KUBE_BACKOFF_MS: '100,800' },
    args: ['--bind', bind, '--log-level', 'info', ...args],
    // --kubernetes: client-node's import and the first lists take long on a busy machine.
    readyTimeoutMs: 30_000,
  });
  gateways.push(g);
  return g;
}

/** The log lines' messages (JSON logs). */
const messages = (g: GatewayProcess): string[] =>
  g.logs().split('\n').flatMap((l) => {
    try {
      return [String((JSON.parse(l) as { msg?: unknown }).msg ?? '')];
    } catch {
      return [];
    }
  });

const orders = async (g: GatewayProcess, secret: string, result: string): Promise<number> =>
  sumSamples(findSamples(parsePrometheus((await g.admin('/stats/prometheus')).text), 'gatehouse_acme_orders_total', { secret, result }));

const lease = (api: KubeApiServer): KObj => api.get('coordination.k8s.io/v1', 'Lease', NS, 'gatehouse-acme')!;
const holder = (api: KubeApiServer): string => lease(api).spec?.holderIdentity ?? '';

/** The test takes the Lease as a replica would (or hands it to one: a replica renews a lease naming it). */
function setHolder(api: KubeApiServer, identity: string, seconds: number): void {
  const l = lease(api);
  const now = new Date().toISOString().replace(/Z$/, '000Z');
  api.put({ ...l, spec: { ...l.spec, holderIdentity: identity, leaseDurationSeconds: seconds, renewTime: now, acquireTime: now, leaseTransitions: (l.spec?.leaseTransitions ?? 0) + 1 } });
}

/** The Secret's data, decoded. */
function secretData(api: KubeApiServer): Record<string, string> {
  const s = api.get('v1', 'Secret', NS, 'gatehouse-acme');
  return Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

const apply = (api: KubeApiServer, ...docs: KObj[]) => kubectlOk(api, ['apply', '-f', '-'], { stdin: yamlDocs(...docs) });

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'gatehouse-acme-replicas-'));
  pebble = await startPebble(work);
  const [https, https2, https3, https4, https5] = (await freePorts(5)) as [number, number, number, number, number];
  P = { https, https2, https3, https4, https5 };
}, 30_000);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await pebble?.stop();
  if (work) removeDir(work);
});

describe('ACME state objects missing or forbidden', { timeout: 60_000 }, () => {
  let api: KubeApiServer;
  let gw: GatewayProcess;

  beforeAll(async () => {
    // No Lease, no Secret, and no RBAC on leases.
    api = new KubeApiServer({ bookmarkIntervalMs: 300 });
    await api.start();
    api.forbid('coordination.k8s.io', 'leases');
    await apply(api, acmeGateway('rbac', P.https, 'rbac.gatehouse.test', true));
    gw = await replica(api, 'replica-c', '127.0.0.1');
  }, 60_000);

  afterAll(async () => {
    await gw?.stop();
    await api?.close();
  });

  it('RBAC 403 on the Lease and a missing Secret are logged with the rule and the command; the placeholder keeps serving, nothing is ordered', async () => {
    const before = pebble.orders();
    const rule = 'Missing rule: apiGroups: ["coordination.k8s.io"], resources: ["leases"], resourceNames: ["gatehouse-acme"], verbs: ["get","watch","update"] (in a Role in namespace "istio-system"';
    await waitFor(() => messages(gw).some((m) => m.startsWith('RBAC: Gatehouse may not get the Lease istio-system/gatehouse-acme') && m.includes(rule)), 10_000);
    await waitFor(() => messages(gw).some((m) => m.startsWith('ACME: the Secret istio-system/gatehouse-acme does not exist') && m.includes("| kubectl create -f -")), 10_000);
    // The lease was asked for again and again (403 each time), and never granted.
    await waitFor(() => api.requests.filter((r) => r.path.endsWith('/leases/gatehouse-acme') && r.status === 403).length >= 4, 10_000);
    const c = await handshake('127.0.0.1', P.https, 'rbac.gatehouse.test');
    expect(isPlaceholder(c)).toBe(true);
    expect(pebble.orders()).toBe(before);
    // Gatehouse never creates them.
    expect(api.requests.some((r) => r.method === 'POST' && /\/(leases|secrets)\b/.test(r.path))).toBe(false);
  });

  it('the logged commands create what is missing; the replica then takes the empty Lease and orders', async () => {
    api.allow('coordination.k8s.io', 'leases');
    const command = (what: string): string => {
      const line = messages(gw).find((m) => m.startsWith(`ACME: the ${what} istio-system/gatehouse-acme does not exist`))!;
      return /echo '(\{.*\})' \| kubectl create -f -$/.exec(line)![1]!;
    };
    await kubectlOk(api, ['create', '-f', '-'], { stdin: command('Secret') });
    await waitFor(() => messages(gw).some((m) => m.startsWith('ACME: the Lease istio-system/gatehouse-acme does not exist')), 10_000);
    await kubectlOk(api, ['create', '-f', '-'], { stdin: command('Lease') });
    const c = await issued('127.0.0.1', P.https, 'rbac.gatehouse.test');
    expect(c.subjectaltname).toBe('DNS:rbac.gatehouse.test');
    expect(holder(api)).toBe('replica-c');
    expect(Object.keys(secretData(api)).filter((k) => k.startsWith('cert.')).sort()).toEqual(['cert.default_rbac-cert.crt', 'cert.default_rbac-cert.json', 'cert.default_rbac-cert.key']);
  });
});

describe('ACME with two replicas sharing the Lease and the Secret', { timeout: 60_000 }, () => {
  let api: KubeApiServer;
  let a: GatewayProcess;
  let b: GatewayProcess;
  let site: PeerCertificate;

  beforeAll(async () => {
    api = new KubeApiServer({ bookmarkIntervalMs: 300 });
    await api.start();
    // The package's own state objects: an empty Lease and an empty Secret ("no state yet").
    await kubectlOk(api, ['apply', '-n', NS, '-f', join(ROOT, 'deploy/base/acme-state.yaml')]);
    // Parked: held by someone else until the test hands it to a replica.
    setHolder(api, 'parked', 3600);
    await apply(api, acmeGateway('site', P.https, 'site.gatehouse.test', true));
    // A: two data-plane threads, so that HTTP-01 answers from the Secret reach both.
    [a, b] = await Promise.all([replica(api, 'replica-a', '127.0.0.1', ['--workers', '2']), replica(api, 'replica-b', '127.0.0.2')]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await api?.close();
  });

  it('one order, placed by the lease holder, answered by the other replica; both serve the issued certificate; one account key', async () => {
    // Nobody may order while the lease is someone else's.
    expect(isPlaceholder(await handshake('127.0.0.1', P.https, 'site.gatehouse.test'))).toBe(true);
    expect(isPlaceholder(await handshake('127.0.0.2', P.https, 'site.gatehouse.test'))).toBe(true);
    const ordersBefore = pebble.orders();
    const accountsBefore = pebble.accounts();
    setHolder(api, 'replica-b', LEASE);

    site = await issued('127.0.0.1', P.https, 'site.gatehouse.test');
    const fromB = await issued('127.0.0.2', P.https, 'site.gatehouse.test');
    expect(fromB.serialNumber).toBe(site.serialNumber);
    expect(site.subjectaltname).toBe('DNS:site.gatehouse.test');
    // The chain verifies against pebble's root.
    const root = await pebble.root();
    const verified = await new Promise<PeerCertificate>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: P.https, servername: 'site.gatehouse.test', ca: root }, () => {
        resolve(s.getPeerCertificate());
        s.end();
      });
      s.on('error', reject);
    });
    expect(verified.serialNumber).toBe(site.serialNumber);

    // Exactly one order and one new account at pebble's side; B ordered, A did not.
    expect(pebble.orders() - ordersBefore).toBe(1);
    expect(pebble.accounts() - accountsBefore).toBe(1);
    expect(await orders(b, 'acme://default/site-cert', 'success')).toBe(1);
    expect(await orders(a, 'acme://default/site-cert', 'success')).toBe(0);
    expect(messages(b)).toContain('created an ACME account key');
    expect(messages(a)).not.toContain('created an ACME account key');
    expect(messages(a)).not.toContain('ordering an ACME certificate');

    // The Secret: one account key, the certificate (issued by B), no challenge left behind.
    const data = secretData(api);
    expect(Object.keys(data).filter((k) => k.startsWith('account.') && k.endsWith('.key'))).toHaveLength(1);
    expect(Object.values(data)).toContain(pebble.directory);
    expect(JSON.parse(data['cert.default_site-cert.json']!)).toMatchObject({ directory: pebble.directory, hosts: ['site.gatehouse.test'], issuedBy: 'replica-b' });
    expect(Object.keys(data).some((k) => k.startsWith('challenge.'))).toBe(false);
    expect(holder(api)).toBe('replica-b');
    storedData = { ...(api.get('v1', 'Secret', NS, 'gatehouse-acme')!.data as Record<string, string>) };
    storedSerial = site.serialNumber;
  });

  it('the lease holder killed: the other replica takes the lease once it expires and orders from then on; no certificate is ordered twice', async () => {
    const transitions = lease(api).spec.leaseTransitions as number;
    b.proc.kill('SIGKILL');
    await b.exited;
    await waitFor(() => holder(api) === 'replica-a', 15_000, 50);
    expect(lease(api).spec.leaseTransitions).toBe(transitions + 1);
    await waitFor(() => messages(a).some((m) => m.startsWith('ACME: this replica (replica-a) holds the Lease istio-system/gatehouse-acme')), 10_000);

    const ordersBefore = pebble.orders();
    await apply(api, acmeGateway('later', P.https2, 'later.gatehouse.test'));
    const later = await issued('127.0.0.1', P.https2, 'later.gatehouse.test');
    expect(later.subjectaltname).toBe('DNS:later.gatehouse.test');
    expect(pebble.orders() - ordersBefore).toBe(1);
    expect(await orders(a, 'acme://default/later-cert', 'success')).toBe(1);
    // The certificate B issued is still the one served: not ordered again.
    expect((await handshake('127.0.0.1', P.https, 'site.gatehouse.test')).serialNumber).toBe(site.serialNumber);
    expect(await orders(a, 'acme://default/site-cert', 'success')).toBe(0);
    expect(JSON.parse(secretData(api)['cert.default_later-cert.json']!).issuedBy).toBe('replica-a');
  });

  it('a replica joining serves every stored certificate from its first handshake, without ordering', async () => {
    const ordersBefore = pebble.orders();
    b = await replica(api, 'replica-b', '127.0.0.2');
    const c1 = await handshake('127.0.0.2', P.https, 'site.gatehouse.test');
    const c2 = await handshake('127.0.0.2', P.https2, 'later.gatehouse.test');
    expect(c1.serialNumber).toBe(site.serialNumber);
    expect(fromPebble(c2)).toBe(true);
    expect(messages(b).filter((m) => m === 'using the stored ACME certificate')).toHaveLength(2);
    expect(pebble.orders()).toBe(ordersBefore);
    expect(holder(api)).toBe('replica-a');
  });

  it('a replica that loses the lease mid-order stops ordering and never writes the Secret after it', async () => {
    expect(holder(api)).toBe('replica-a');
    // When A publishes the challenge of its new order, the lease is taken from it at that instant.
    let takenAt = -1;
    let takenRv = '';
    const off = api.onChange((e) => {
      if (takenAt >= 0 || e.object.kind !== 'Secret' || e.object.metadata.name !== 'gatehouse-acme') return;
      if (!Object.keys(e.object.data ?? {}).some((k) => k.startsWith('challenge.'))) return;
      takenAt = api.requests.length;
      takenRv = e.object.metadata.resourceVersion as string;
      setHolder(api, 'intruder', 3600);
    });
    try {
      await apply(api, acmeGateway('third', P.https3, 'third.gatehouse.test'));
      await waitFor(() => messages(a).some((m) => m.startsWith('ACME: this replica (replica-a) lost the Lease istio-system/gatehouse-acme')), 10_000);
      await waitFor(() => messages(a).some((m) => m.startsWith('ACME order stopped: this replica lost the lease') || m.startsWith('ACME certificate issued after this replica lost the lease: discarded')), 10_000);
      // Long enough for any write that would come: many renewal periods.
      await sleep(1500);
    } finally {
      off();
    }
    expect(takenAt).toBeGreaterThan(0);
    // After the lease was taken: not one write to the Secret, by either replica.
    const writes = api.requests.slice(takenAt).filter((r) => r.path.endsWith('/secrets/gatehouse-acme') && r.method !== 'GET');
    expect(writes).toEqual([]);
    expect(api.get('v1', 'Secret', NS, 'gatehouse-acme')!.metadata.resourceVersion).toBe(takenRv);
    expect(Object.keys(secretData(api)).some((k) => k.startsWith('cert.default_third-cert'))).toBe(false);
    expect(holder(api)).toBe('intruder');
    expect(messages(b)).not.toContain('ordering an ACME certificate');
    for (const host of ['127.0.0.1', '127.0.0.2']) expect(isPlaceholder(await waitFor(() => handshake(host, P.https3, 'third.gatehouse.test'), 15_000, 100))).toBe(true);
  });

  it('a released lease is taken by a replica, which orders what is missing and clears the stale challenge', async () => {
    // As client-go releases a lease: no holder, 1 s.
    setHolder(api, '', 1);
    const third = await issued('127.0.0.1', P.https3, 'third.gatehouse.test');
    expect((await issued('127.0.0.2', P.https3, 'third.gatehouse.test')).serialNumber).toBe(third.serialNumber);
    const by = JSON.parse(secretData(api)['cert.default_third-cert.json']!).issuedBy as string;
    expect(['replica-a', 'replica-b']).toContain(by);
    expect(holder(api)).toBe(by);
    await waitFor(() => !Object.keys(secretData(api)).some((k) => k.startsWith('challenge.')), 10_000);
  });

  it("a certificate that would take the Secret over Kubernetes' 1 MiB is not ordered: logged, counted, the placeholder serves", async () => {
    const s = api.get('v1', 'Secret', NS, 'gatehouse-acme')!;
    const used = Object.values(s.data as Record<string, string>).reduce((n, v) => n + Buffer.from(v, 'base64').length, 0);
    // 8 KiB left: less than a certificate may need.
    const total = 1024 * 1024 - 8 * 1024 - 9;
    api.put({ ...s, data: { ...s.data, filler: Buffer.alloc(total - used, 1).toString('base64') } });
    // Both replicas have read it (whichever leads decides on what it last read).
    const seen = async (g: GatewayProcess): Promise<number> => sumSamples(findSamples(parsePrometheus((await g.admin('/stats/prometheus')).text), 'gatehouse_acme_secret_bytes'));
    for (const g of [a, b]) await waitFor(async () => (await seen(g)) === total, 20_000, 100);
    const ordersBefore = pebble.orders();
    await apply(api, acmeGateway('big', P.https4, 'big.gatehouse.test'));
    const refused = (g: GatewayProcess): boolean =>
      messages(g).some((m) => m.startsWith('ACME order failed: not ordered: the Secret istio-system/gatehouse-acme holds') && m.includes('Kubernetes limits a Secret to 1048576 bytes'));
    await waitFor(() => refused(a) || refused(b), 20_000).catch((e: Error) => {
      throw new Error(`${e.message}\nholder ${holder(api)}\nA:\n${a.logs().split('\n').slice(-25).join('\n')}\nB:\n${b.logs().split('\n').slice(-25).join('\n')}`);
    });
    expect((await orders(a, 'acme://default/big-cert', 'failure')) + (await orders(b, 'acme://default/big-cert', 'failure'))).toBeGreaterThanOrEqual(1);
    expect(pebble.orders()).toBe(ordersBefore);
    // (each replica opens the port once it has applied the Gateway)
    for (const host of ['127.0.0.1', '127.0.0.2']) expect(isPlaceholder(await waitFor(() => handshake(host, P.https4, 'big.gatehouse.test'), 15_000, 100))).toBe(true);
  });

  it('a replica stopped gracefully releases the lease (another may take it at once)', async () => {
    const leader = holder(api) === 'replica-a' ? a : b;
    const name = holder(api);
    await leader.stop();
    expect(holder(api)).not.toBe(name);
    const l = lease(api).spec;
    if (l.holderIdentity === '') expect(l.leaseDurationSeconds).toBe(1);
  });
});

describe('a Secret that already holds a valid certificate', { timeout: 60_000 }, () => {
  let api: KubeApiServer;
  let d: GatewayProcess;

  beforeAll(async () => {
    expect(storedSerial).not.toBe('');
    // Another cluster's state, restored: the Secret holds the account key and the certificate the
    // replicas above had issued; the Lease is free.
    api = new KubeApiServer({ bookmarkIntervalMs: 300 });
    await api.start();
    await kubectlOk(api, ['apply', '-n', NS, '-f', join(ROOT, 'deploy/base/acme-state.yaml')]);
    const s = api.get('v1', 'Secret', NS, 'gatehouse-acme')!;
    api.put({ ...s, data: storedData });
    await apply(api, acmeGateway('site', P.https5, 'site.gatehouse.test', true));
    d = await replica(api, 'replica-d', '127.0.0.1');
  }, 60_000);

  afterAll(async () => {
    await d?.stop();
    await api?.close();
  });

  it('the replica takes the Lease and serves the stored certificate from its first handshake; nothing is ordered', async () => {
    const ordersBefore = pebble.orders();
    expect((await handshake('127.0.0.1', P.https5, 'site.gatehouse.test')).serialNumber).toBe(storedSerial);
    await waitFor(() => holder(api) === 'replica-d', 10_000, 50);
    await waitFor(() => messages(d).some((m) => m.startsWith('ACME: this replica (replica-d) holds the Lease')), 10_000);
    // Leading for many renewal periods: still nothing ordered, the same certificate served.
    await sleep(1_500);
    expect(pebble.orders()).toBe(ordersBefore);
    expect(await orders(d, 'acme://default/site-cert', 'success')).toBe(0);
    expect(await orders(d, 'acme://default/site-cert', 'failure')).toBe(0);
    expect(messages(d)).toContain('using the stored ACME certificate');
    expect(messages(d)).not.toContain('ordering an ACME certificate');
    expect(messages(d)).not.toContain('created an ACME account key');
    expect((await handshake('127.0.0.1', P.https5, 'site.gatehouse.test')).serialNumber).toBe(storedSerial);
    // The Secret is left as it was (no write needed).
    expect(api.requests.some((r) => r.path.endsWith('/secrets/gatehouse-acme') && r.method !== 'GET')).toBe(false);
  });
});
