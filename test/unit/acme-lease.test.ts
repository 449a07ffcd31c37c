// The Kubernetes half of ACME with several replicas (src/tls/acme-lease.ts) against the test API
// server, over HTTPS: the Lease `gatehouse-acme` as client-go's leaderelection uses it
// (holderIdentity, leaseDurationSeconds, acquireTime, renewTime, leaseTransitions; an expired or
// released lease is taken, a valid one is not), optimistic concurrency on the Lease and on the
// Secret (a stale resourceVersion is a 409 Conflict: the Lease's loser does not lead, a Secret
// write reads again and retries), and a replica that lost the Lease never writes the Secret.
// Timings are short: a 1 s lease, tried every 100 ms, given up after 600 ms without a renewal.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KubeClient } from '../../src/config/kubernetes/client.js';
import { connect } from '../../src/config/kubernetes/credentials.js';
import { ACME_STATE_NAME, AcmeKubeHost, type AcmeHostEvent, type AcmeLogEvent } from '../../src/tls/acme-lease.js';
import { KubeApiServer, type KObj, type RequestLogEntry } from '../helpers/kube-apiserver.js';
import { sleep, waitFor } from '../helpers/net.js';

const NS = 'gatehouse';
const TIMINGS = { leaseDurationSeconds: 1, retryPeriodMs: 100, renewDeadlineMs: 600 };
const LEASE_PATH = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${ACME_STATE_NAME}`;
const SECRET_PATH = `/api/v1/namespaces/${NS}/secrets/${ACME_STATE_NAME}`;

let api: KubeApiServer;
let client: KubeClient;
const replicas: Replica[] = [];
/** Every change of `leading`, of every replica, in order. */
let timeline: Array<{ identity: string; leading: boolean }> = [];

class Replica {
  readonly host: AcmeKubeHost;
  readonly events: Array<AcmeHostEvent | AcmeLogEvent> = [];
  leading = false;
  #seq = 0;

  constructor(readonly identity: string) {
    this.host = new AcmeKubeHost(client, { namespace: NS, identity, ...TIMINGS }, (e) => {
      this.events.push(e);
      if (e.type === 'acme-lease') {
        this.leading = e.leading;
        timeline.push({ identity, leading: e.leading });
      }
    });
    replicas.push(this);
  }

  start(): this {
    this.host.start();
    return this;
  }

  /** A write of Secret keys, as the main thread asks for one; resolves with the answer. */
  async write(set: Record<string, string>, remove: string[] = []): Promise<{ error?: string; lost?: boolean }> {
    const id = ++this.#seq;
    const from = this.events.length;
    this.host.handle({ type: 'write', id, set, remove });
    return waitFor(() => this.events.slice(from).find((e): e is Extract<AcmeHostEvent, { type: 'acme-reply' }> => e.type === 'acme-reply' && e.id === id), 5_000);
  }

  /** The Secret as this replica last saw it (its `acme-secret` events). */
  secret(): Extract<AcmeHostEvent, { type: 'acme-secret' }>['state'] | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.type === 'acme-secret') return e.state;
    }
    return undefined;
  }
}

const lease = (): KObj => api.get('coordination.k8s.io/v1', 'Lease', NS, ACME_STATE_NAME)!;
const secret = (): KObj => api.get('v1', 'Secret', NS, ACME_STATE_NAME)!;
const secretData = (): Record<string, string> => Object.fromEntries(Object.entries((secret().data ?? {}) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
const microNow = (): string => new Date().toISOString().replace(/Z$/, '000Z');

/** The Lease written as another replica (`rival`) writes it when it acquires or renews. */
function rivalTakes(identity: string, seconds: number): KObj {
  const l = lease();
  return api.put({ ...l, spec: { ...l.spec, holderIdentity: identity, leaseDurationSeconds: seconds, acquireTime: microNow(), renewTime: microNow(), leaseTransitions: (l.spec?.leaseTransitions ?? 0) + 1 } });
}

/** Lease updates (PUT) and who sent them (the holderIdentity they write). */
let leaseUpdates: Array<{ identity: string | undefined; log: RequestLogEntry }> = [];
/** The API server's answers to one replica's Lease updates. */
const leasePuts = (identity: string): number[] => leaseUpdates.filter((u) => u.identity === identity && u.log.status !== 0).map((u) => u.log.status);

/** At no point did two replicas lead at once. */
function neverTwoLeaders(): void {
  const now = new Set<string>();
  for (const t of timeline) {
    if (t.leading) now.add(t.identity);
    else now.delete(t.identity);
    expect(now.size).toBeLessThanOrEqual(1);
  }
}

beforeAll(async () => {
  api = new KubeApiServer({ bookmarkIntervalMs: 200 });
  await api.start();
  client = new KubeClient(await connect({ kubeconfig: api.defaultKubeconfig }));
  // Remember who sent each Lease update (its holderIdentity), to count them per replica.
  api.onRequest((r) => {
    if (r.method === 'PUT' && r.path === LEASE_PATH) leaseUpdates.push({ identity: (JSON.parse(r.body) as KObj).spec?.holderIdentity as string | undefined, log: r.log });
  });
}, 20_000);

afterAll(async () => {
  await api?.close();
});

beforeEach(() => {
  timeline = [];
  api.remove('coordination.k8s.io/v1', 'Lease', NS, ACME_STATE_NAME);
  api.remove('v1', 'Secret', NS, ACME_STATE_NAME);
  // As deploy/base/acme-state.yaml creates them: empty.
  api.put({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: ACME_STATE_NAME, namespace: NS }, spec: {} });
  api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: ACME_STATE_NAME, namespace: NS }, type: 'Opaque' });
  api.requests.length = 0;
  leaseUpdates = [];
});

afterEach(async () => {
  await Promise.all(replicas.splice(0).map((r) => r.host.stop()));
});

describe('ACME Lease (client-go leaderelection semantics)', () => {
  it('takes an empty Lease: holderIdentity, leaseDurationSeconds, acquireTime = renewTime (MicroTime), leaseTransitions 1; renewals advance renewTime only', async () => {
    const a = new Replica('replica-a').start();
    await waitFor(() => a.leading, 5_000);
    const first = lease().spec;
    expect(first.holderIdentity).toBe('replica-a');
    expect(first.leaseDurationSeconds).toBe(1);
    expect(first.acquireTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(first.renewTime).toBe(first.acquireTime);
    expect(first.leaseTransitions).toBe(1);
    await waitFor(() => lease().spec.renewTime !== first.renewTime, 5_000);
    const later = lease().spec;
    expect(later.acquireTime).toBe(first.acquireTime);
    expect(later.leaseTransitions).toBe(1);
    expect(later.holderIdentity).toBe('replica-a');
    expect(Date.parse(later.renewTime)).toBeGreaterThan(Date.parse(first.renewTime));
    // Never created: the Lease is the package's.
    expect(api.requests.some((r) => r.method === 'POST')).toBe(false);
  });

  it('an update that loses the race (409 Conflict) does not lead; a valid lease of another holder is left alone until it expires, then taken over', async () => {
    const b = new Replica('replica-b');
    // When B's update arrives, another replica's update has just landed: B's resourceVersion is stale.
    let rivalAt = 0;
    const off = api.onRequest((r) => {
      if (rivalAt || r.method !== 'PUT' || r.path !== LEASE_PATH) return;
      rivalTakes('rival', 1);
      rivalAt = Date.now();
    });
    b.start();
    await waitFor(() => leasePuts('replica-b').length >= 1, 5_000);
    off();
    expect(leasePuts('replica-b')[0]).toBe(409);
    expect(lease().spec.holderIdentity).toBe('rival');
    // The rival renews for a while: B keeps reading and never updates the Lease, nor leads.
    const putsBefore = leasePuts('replica-b').length;
    for (let i = 0; i < 6; i++) {
      rivalTakes('rival', 1);
      await sleep(200);
    }
    expect(leasePuts('replica-b').length).toBe(putsBefore);
    expect(b.leading).toBe(false);
    expect(lease().spec.holderIdentity).toBe('rival');
    // The rival renews one last time and stops: B takes over once that record has stayed
    // unchanged for leaseDurationSeconds (B can only have seen it after it was written).
    const lastRival = Date.now();
    rivalTakes('rival', 1);
    const transitions = lease().spec.leaseTransitions as number;
    await waitFor(() => b.leading, 5_000);
    expect(Date.now() - lastRival).toBeGreaterThanOrEqual(1_000);
    expect(lease().spec).toMatchObject({ holderIdentity: 'replica-b', leaseTransitions: transitions + 1 });
    expect(timeline).toEqual([{ identity: 'replica-b', leading: true }]);
  });

  it('two replicas starting together on an empty Lease: exactly one leads, the other waits', async () => {
    const a = new Replica('replica-a');
    const b = new Replica('replica-b');
    a.start();
    b.start();
    await waitFor(() => a.leading || b.leading, 5_000);
    await sleep(1_500);
    neverTwoLeaders();
    const leader = a.leading ? a : b;
    const other = leader === a ? b : a;
    expect(other.leading).toBe(false);
    expect(lease().spec.holderIdentity).toBe(leader.identity);
    expect(lease().spec.leaseTransitions).toBe(1);
    // The one not leading never had an update accepted.
    expect(leasePuts(other.identity).filter((s) => s === 200)).toEqual([]);
  });

  it('a holder whose renewal is refused 409 because another replica took the Lease stops leading at once and writes nothing to the Secret', async () => {
    const a = new Replica('replica-a').start();
    await waitFor(() => a.leading && a.secret()?.status === 'ok', 5_000);
    const secretRv = secret().metadata.resourceVersion;
    // The Lease is taken from A just before A's next renewal is handled (A's clock: still valid).
    let taken = false;
    const off = api.onRequest((r) => {
      if (taken || r.method !== 'PUT' || r.path !== LEASE_PATH) return;
      taken = true;
      rivalTakes('rival', 3600);
    });
    const from = api.requests.length;
    // A write asked for now renews the Lease first: refused, so nothing is written.
    const reply = await a.write({ 'account.x.key': 'KEY' });
    off();
    expect(reply.lost).toBe(true);
    expect(reply.error).toMatch(/nothing written/);
    await waitFor(() => !a.leading, 2_000);
    expect(api.requests.slice(from).filter((r) => r.path === LEASE_PATH && r.method === 'PUT').map((r) => r.status)).toContain(409);
    // Later writes are refused at once, and the Secret is never updated.
    expect((await a.write({ 'account.x.key': 'KEY' })).lost).toBe(true);
    await sleep(500);
    expect(api.requests.slice(from).filter((r) => r.path === SECRET_PATH && r.method !== 'GET')).toEqual([]);
    expect(secret().metadata.resourceVersion).toBe(secretRv);
    expect(lease().spec.holderIdentity).toBe('rival');
    expect(timeline).toEqual([
      { identity: 'replica-a', leading: true },
      { identity: 'replica-a', leading: false },
    ]);
  });

  it('a holder that cannot renew within the renew deadline (API server away) stops leading; another takes the lease after it expires', async () => {
    const a = new Replica('replica-a').start();
    await waitFor(() => a.leading, 5_000);
    await api.stop();
    await waitFor(() => !a.leading, 3_000);
    expect(a.events.some((e) => e.type === 'log' && e.msg.includes('lost the Lease') && e.msg.includes('could not renew it for 600 ms'))).toBe(true);
    expect((await a.write({ 'account.x.key': 'KEY' })).lost).toBe(true);
    await a.host.stop();
    await api.start();
    const b = new Replica('replica-b').start();
    await waitFor(() => b.leading, 5_000);
    expect(lease().spec).toMatchObject({ holderIdentity: 'replica-b', leaseTransitions: 2 });
    neverTwoLeaders();
  });

  it('a holder that stops releases the Lease (empty holder, 1 s): another replica takes it at its next try', async () => {
    const a = new Replica('replica-a').start();
    await waitFor(() => a.leading, 5_000);
    // B waits: the Lease is A's and valid.
    const b = new Replica('replica-b').start();
    await sleep(400);
    expect(b.leading).toBe(false);
    await a.host.stop();
    expect(lease().spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1, leaseTransitions: 1 });
    await waitFor(() => b.leading, 2_000);
    expect(lease().spec).toMatchObject({ holderIdentity: 'replica-b', leaseTransitions: 2 });
    neverTwoLeaders();
  });
});

describe('ACME Secret writes (optimistic concurrency)', () => {
  it('a write whose update conflicts (409: the Secret changed meanwhile) reads it again and retries: both changes are kept', async () => {
    const a = new Replica('replica-a').start();
    await waitFor(() => a.leading && a.secret()?.status === 'ok', 5_000);
    let changed = false;
    const off = api.onRequest((r) => {
      if (changed || r.method !== 'PUT' || r.path !== SECRET_PATH) return;
      changed = true;
      // Someone else's key lands first (e.g. an operator's `kubectl edit`).
      const s = secret();
      api.put({ ...s, data: { ...(s.data ?? {}), 'owner-note': Buffer.from('keep me').toString('base64') } });
    });
    const from = api.requests.length;
    const reply = await a.write({ 'account.abc.key': 'PEM', 'challenge.t1': 'answer' });
    off();
    expect(reply.error).toBeUndefined();
    expect(api.requests.slice(from).filter((r) => r.method === 'PUT' && r.path === SECRET_PATH).map((r) => r.status)).toEqual([409, 200]);
    expect(secretData()).toEqual({ 'owner-note': 'keep me', 'account.abc.key': 'PEM', 'challenge.t1': 'answer' });
    // Removing a key leaves the others.
    expect((await a.write({}, ['challenge.t1'])).error).toBeUndefined();
    expect(secretData()).toEqual({ 'owner-note': 'keep me', 'account.abc.key': 'PEM' });
    // Every replica's view follows (the holder's own write, and the watch): Gatehouse's keys only.
    await waitFor(() => {
      const s = a.secret();
      return s?.status === 'ok' && JSON.stringify(s.data) === JSON.stringify({ 'account.abc.key': 'PEM' });
    }, 3_000);
  });

  it('a replica not holding the Lease reads the Secret (and follows changes by watch) but may not write it', async () => {
    rivalTakes('rival', 3600);
    const b = new Replica('replica-b').start();
    await waitFor(() => b.secret()?.status === 'ok', 5_000);
    const s = secret();
    api.put({ ...s, data: { 'cert.default_site.crt': Buffer.from('CERT').toString('base64') } });
    await waitFor(() => {
      const st = b.secret();
      return st?.status === 'ok' && st.data['cert.default_site.crt'] === 'CERT';
    }, 3_000);
    const from = api.requests.length;
    const reply = await b.write({ 'cert.default_site.crt': 'MINE' });
    expect(reply.lost).toBe(true);
    expect(api.requests.slice(from).filter((r) => r.path === SECRET_PATH && r.method !== 'GET')).toEqual([]);
    expect(secretData()['cert.default_site.crt']).toBe('CERT');
  });
});
