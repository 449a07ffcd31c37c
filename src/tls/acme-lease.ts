// ACME with several replicas (`--kubernetes`), the Kubernetes half. It runs where the Kubernetes
// source runs (the configuration thread, src/workers/kube-host.ts), on the source's connection,
// and talks to the main thread's AcmeManager by messages (acme-coordination.ts).
// - A Lease (coordination.k8s.io/v1 `gatehouse-acme` in the gateway's namespace) elects the one
//   replica that orders and renews, as client-go's leaderelection does: every replica tries to
//   acquire it every retry period (jittered); a lease whose holder has not renewed it for
//   `leaseDurationSeconds` - measured on this replica's clock from when it last saw the record
//   change, so clock skew between nodes does not matter - is taken over with an update carrying the
//   resourceVersion read (optimistic concurrency: of two replicas, one wins, the other gets 409).
//   The holder renews every retry period and gives up when it could not renew for the renew
//   deadline; unlike client-go it stops at once when it sees another holder. On shutdown it
//   releases the lease (empty holder, 1 s), so that another replica takes over without waiting.
// - The Secret `gatehouse-acme` beside it holds the account keys, the certificates and the HTTP-01
//   answers of the orders in progress. It is read (get) and watched (by name, as RBAC
//   `resourceNames` requires) by every replica, which serves from it; only the lease holder
//   writes it, and only right after renewing the lease, with the resourceVersion it read as a
//   precondition - so a replica that lost the lease never writes after it.
// - Gatehouse never creates either object (RBAC cannot limit `create` to a name): a missing one is
//   logged once with the command that creates it, a forbidden one with the missing RBAC rule.
import { Backoff, sleep } from '../config/kubernetes/backoff.js';
import { asStatus, type ApiObject, type JsonAnswer, type KubeClient } from '../config/kubernetes/client.js';

/** Name of the Lease and of the Secret (deploy/base/acme-state.yaml creates both, empty). */
export const ACME_STATE_NAME = 'gatehouse-acme';

/** What Kubernetes accepts in one Secret: the decoded values of `data` together (core.MaxSecretSize). */
export const MAX_SECRET_BYTES = 1024 * 1024;

/** Data keys of the Secret that are Gatehouse's (others are left as they are and not sent on). */
export const ACME_KEY_PREFIXES = ['account.', 'cert.', 'challenge.'] as const;

export interface AcmeLeaseSettings {
  /** `--namespace`: where the Lease and the Secret are. */
  namespace: string;
  /** `holderIdentity`: the pod's name (POD_NAME, else the hostname, which is the pod's name in a pod). */
  identity: string;
  /** How long a lease that is not renewed stays another replica's (client-go: 15 s). */
  leaseDurationSeconds: number;
  /** How often the holder renews and the others try to acquire. */
  retryPeriodMs: number;
  /** The holder gives up when it could not renew for this long (below the lease duration). */
  renewDeadlineMs: number;
}

/** Default timings: a 15 s lease renewed every 5 s, given up after 10 s without a renewal. */
export const DEFAULT_LEASE: Pick<AcmeLeaseSettings, 'leaseDurationSeconds' | 'retryPeriodMs' | 'renewDeadlineMs'> = {
  leaseDurationSeconds: 15,
  retryPeriodMs: 5_000,
  renewDeadlineMs: 10_000,
};

/** Main thread → this side. */
export type AcmeHostRequest =
  | { type: 'start'; settings: AcmeLeaseSettings }
  /** Set and remove data keys of the Secret (values are text), if this replica holds the lease. */
  | { type: 'write'; id: number; set: Record<string, string>; remove: string[] }
  /** Stop; release the lease if held. */
  | { type: 'stop'; id: number };

/** The Secret as this side last saw it. */
export type AcmeSecretState =
  | {
      status: 'ok';
      resourceVersion: string;
      /** Gatehouse's keys (ACME_KEY_PREFIXES), decoded. */
      data: Record<string, string>;
      /** Bytes of every decoded value, Gatehouse's or not (what the 1 MiB limit counts). */
      bytes: number;
    }
  | { status: 'missing' | 'forbidden' | 'unreachable'; detail: string };

/** This side → the main thread. */
export type AcmeHostEvent =
  | { type: 'acme-lease'; leading: boolean; holder: string | null }
  | { type: 'acme-secret'; state: AcmeSecretState }
  /** A write or stop answered: `error` when nothing was written (`lost`: because the lease is not held). */
  | { type: 'acme-reply'; id: number; error?: string; lost?: boolean }
  /** The side was restarted (the configuration thread died): not leading, pending writes lost. */
  | { type: 'acme-reset'; reason: string };

export type AcmeLogEvent = { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> };

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
  [k: string]: unknown;
}

type LeaseObject = ApiObject & { spec?: LeaseSpec };
type SecretObject = ApiObject & { data?: Record<string, string>; type?: string };

/** How one acquire-or-renew went. */
type Attempt = { ok: true } | { ok: false; held?: string; why: string };

/** RFC 3339 with microseconds, as metav1.MicroTime is written. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** Decoded size of a base64 value without decoding it. */
function decodedBytes(b64: string): number {
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return Math.floor((b64.length * 3) / 4) - pad;
}

/**
 * resourceVersions are opaque, but those of one object grow with every write (they are etcd
 * revisions): a watch event older than a write already seen (the write's answer can overtake its
 * own event) must not bring the old content back.
 */
function newer(a: string, b: string | undefined): boolean {
  if (b === undefined) return true;
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) return BigInt(a) > BigInt(b);
  return a !== b;
}

export class AcmeKubeHost {
  readonly #client: KubeClient;
  readonly #emit: (e: AcmeHostEvent | AcmeLogEvent) => void;
  readonly #s: AcmeLeaseSettings;
  readonly #stop = new AbortController();
  readonly #leasePath: string;
  readonly #secretsPath: string;
  // Lease: the record as last seen, and when it was first seen so (client-go's observedTime).
  #observedRaw = '';
  #observedSpec: LeaseSpec = {};
  #observedAt = 0;
  /** The Lease as last read or written by this replica (the optimistic renewal's base). */
  #lease: LeaseObject | null = null;
  #leading = false;
  #lastRenew = 0;
  /** The last problem reported about the Lease (each said once until it changes). */
  #leaseProblem = '';
  // Secret
  #secret: SecretObject | null = null;
  #secretStatus: AcmeSecretState['status'] | null = null;
  #secretProblem = '';
  /** Lease calls and Secret writes, one at a time (a renewal and a write never race each other). */
  #queue: Promise<unknown> = Promise.resolve();
  #loops: Promise<unknown>[] = [];

  constructor(client: KubeClient, settings: AcmeLeaseSettings, emit: (e: AcmeHostEvent | AcmeLogEvent) => void) {
    this.#client = client;
    this.#s = settings;
    this.#emit = emit;
    const ns = encodeURIComponent(settings.namespace);
    this.#leasePath = `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/${ACME_STATE_NAME}`;
    this.#secretsPath = `/api/v1/namespaces/${ns}/secrets`;
  }

  get #where(): string {
    return `${this.#s.namespace}/${ACME_STATE_NAME}`;
  }

  start(): void {
    this.#log('info', `ACME: electing the replica that orders certificates with the Lease ${this.#where} (this replica: ${this.#s.identity}); certificates are kept in the Secret ${this.#where}`, {
      identity: this.#s.identity,
      leaseDurationSeconds: this.#s.leaseDurationSeconds,
    });
    this.#loops = [this.#leaseLoop(), this.#secretLoop()];
  }

  handle(req: AcmeHostRequest): void {
    if (req.type === 'write') {
      void this.#write(req.set, req.remove).then(
        (r) => this.#emit({ type: 'acme-reply', id: req.id, ...(r ? { error: r.error, ...(r.lost ? { lost: true } : {}) } : {}) }),
        (err: unknown) => this.#emit({ type: 'acme-reply', id: req.id, error: (err as Error).message }),
      );
    } else if (req.type === 'stop') {
      void this.stop().then(() => this.#emit({ type: 'acme-reply', id: req.id }));
    }
  }

  /** Stops both loops; a held lease is released (bounded), so another replica takes it at once. */
  async stop(): Promise<void> {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    await Promise.allSettled(this.#loops);
    await this.#serial(async () => {
      if (!this.#leading || !this.#lease) return;
      this.#setLeading(false, this.#s.identity, 'stopping');
      const spec: LeaseSpec = { ...this.#lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: microTime(Date.now()), renewTime: microTime(Date.now()) };
      try {
        const r = await this.#client.put(this.#leasePath, { ...this.#lease, spec }, 2_000);
        if (r.status === 200) this.#log('info', `ACME: released the Lease ${this.#where}`);
      } catch {
        // it expires on its own
      }
    });
  }

  #log(level: AcmeLogEvent['level'], msg: string, fields?: Record<string, unknown>): void {
    this.#emit({ type: 'log', level, msg, ...(fields ? { fields } : {}) });
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  // ---- the Lease ---------------------------------------------------------------------------------

  async #leaseLoop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      const r = await this.#serial(() => this.#tryAcquireOrRenew());
      if (signal.aborted) return;
      const now = Date.now();
      if (r.ok) {
        if (!this.#leading) this.#setLeading(true, this.#s.identity, 'acquired');
      } else if (this.#leading) {
        if (r.held !== undefined) this.#setLeading(false, r.held, `the Lease is held by ${r.held} now`);
        else if (now - this.#lastRenew >= this.#s.renewDeadlineMs) this.#setLeading(false, null, `could not renew it for ${this.#s.renewDeadlineMs} ms: ${r.why}`);
      }
      // The holder renews every period; the others try at a jittered period (client-go: factor 1.2).
      const wait = this.#leading ? this.#s.retryPeriodMs : this.#s.retryPeriodMs * (1 + Math.random() * 1.2);
      await sleep(Math.round(wait), signal);
    }
  }

  #setLeading(leading: boolean, holder: string | null, why: string): void {
    if (leading === this.#leading) return;
    this.#leading = leading;
    if (leading) this.#log('info', `ACME: this replica (${this.#s.identity}) holds the Lease ${this.#where} (${why}): it orders and renews the certificates`, { identity: this.#s.identity });
    else this.#log('warn', `ACME: this replica (${this.#s.identity}) lost the Lease ${this.#where} (${why}): it stops ordering and no longer writes the Secret`, { identity: this.#s.identity, holder });
    this.#emit({ type: 'acme-lease', leading, holder });
  }

  /** The lease valid for its current holder, by this replica's clock (client-go's isLeaseValid). */
  #valid(now: number): boolean {
    return this.#observedAt + (this.#observedSpec.leaseDurationSeconds ?? 0) * 1000 > now;
  }

  #observe(lease: LeaseObject, now: number): void {
    const raw = JSON.stringify(lease.spec ?? {});
    this.#lease = lease;
    if (raw === this.#observedRaw) return;
    this.#observedRaw = raw;
    this.#observedSpec = lease.spec ?? {};
    this.#observedAt = now;
  }

  /** Our record: renewed now; acquired now unless we already held it. */
  #record(lease: LeaseObject, now: number): LeaseObject {
    const old = lease.spec ?? {};
    const mine = old.holderIdentity === this.#s.identity;
    const spec: LeaseSpec = {
      holderIdentity: this.#s.identity,
      leaseDurationSeconds: this.#s.leaseDurationSeconds,
      acquireTime: mine && old.acquireTime ? old.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (old.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    return { ...lease, spec };
  }

  /** client-go's tryAcquireOrRenew (without the create: Gatehouse may not create the Lease). */
  async #tryAcquireOrRenew(): Promise<Attempt> {
    const now = Date.now();
    try {
      // The holder first updates optimistically from the Lease it wrote last.
      if (this.#leading && this.#lease && this.#valid(now)) {
        const r = await this.#client.put(this.#leasePath, this.#record(this.#lease, now), 10_000);
        if (r.status === 200) return this.#renewed(r.body as LeaseObject, now);
      }
      const g = await this.#client.get(this.#leasePath, {}, 10_000, this.#stop.signal);
      if (g.status !== 200) return { ok: false, why: this.#leaseRefused('get', g) };
      const lease = g.body as LeaseObject;
      // Observed when the answer came (client-go's observedTime): a record first seen now is
      // another replica's for a full leaseDurationSeconds from here.
      const seen = Date.now();
      this.#observe(lease, seen);
      const holder = lease.spec?.holderIdentity ?? '';
      if (holder !== '' && holder !== this.#s.identity && this.#valid(seen)) return { ok: false, held: holder, why: `held by ${holder}` };
      const p = await this.#client.put(this.#leasePath, this.#record(lease, now), 10_000);
      // 409: another replica updated it first.
      if (p.status !== 200) return { ok: false, why: p.status === 409 ? 'another replica updated it first' : this.#leaseRefused('update', p) };
      return this.#renewed(p.body as LeaseObject, now);
    } catch (err) {
      return { ok: false, why: (err as Error).message };
    }
  }

  #renewed(lease: LeaseObject, now: number): Attempt {
    this.#observe(lease, now);
    this.#lastRenew = now;
    if (this.#leaseProblem) {
      this.#leaseProblem = '';
      this.#log('info', `ACME: the Lease ${this.#where} can be used again`);
    }
    return { ok: true };
  }

  #leaseRefused(verb: string, a: JsonAnswer): string {
    const s = asStatus(a.body);
    let problem: string;
    if (a.status === 404) {
      const manifest = JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: ACME_STATE_NAME, namespace: this.#s.namespace }, spec: {} });
      problem = `ACME: the Lease ${this.#where} does not exist, and Gatehouse does not create it (it is given no create permission): no replica orders certificates, self-signed placeholders keep serving. Create it (deploy/base/acme-state.yaml does): echo '${manifest}' | kubectl create -f -`;
    } else if (a.status === 403) {
      problem = `RBAC: Gatehouse may not ${verb} the Lease ${this.#where} (${s?.message ?? '403 Forbidden'}): no replica orders certificates, self-signed placeholders keep serving. Missing rule: ${acmeRbacRule('coordination.k8s.io', 'leases', this.#s.namespace)}`;
    } else {
      return `${verb} ${this.#leasePath}: ${a.status}${s?.message ? ` ${s.message}` : ''}`;
    }
    if (problem !== this.#leaseProblem) {
      this.#leaseProblem = problem;
      this.#log('warn', problem, { lease: this.#where, status: a.status, ...(a.status === 403 ? { rule: acmeRbacRule('coordination.k8s.io', 'leases', this.#s.namespace) } : {}) });
    }
    return problem;
  }

  // ---- the Secret --------------------------------------------------------------------------------

  /** Get, then watch by name from there; again after the watch ends; backoff when the server is away. */
  async #secretLoop(): Promise<void> {
    const signal = this.#stop.signal;
    const backoff = new Backoff(500, 30_000);
    const path = `${this.#secretsPath}/${ACME_STATE_NAME}`;
    while (!signal.aborted) {
      try {
        const g = await this.#client.get(path, {}, 30_000, signal);
        let rv: string | undefined;
        if (g.status === 200) {
          this.#setSecret(g.body as SecretObject);
          rv = (g.body as SecretObject).metadata.resourceVersion;
        } else if (g.status === 404 || g.status === 403) {
          this.#secretRefused('get', g);
          // A missing Secret is watched for (the watch brings it once created); a forbidden one is tried again later.
          if (g.status === 403) {
            await sleep(this.#s.retryPeriodMs * 4, signal);
            continue;
          }
        } else {
          throw new Error(`${path}: ${g.status}`);
        }
        const timeout = 300 + Math.floor(Math.random() * 300);
        let again = false;
        const end = await this.#client.watch(
          this.#secretsPath,
          { fieldSelector: `metadata.name=${ACME_STATE_NAME}`, resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: timeout },
          {
            event: (e) => {
              if (again) return;
              backoff.reset();
              if (e.type === 'ADDED' || e.type === 'MODIFIED') this.#setSecret(e.object as SecretObject);
              else if (e.type === 'DELETED') this.#secretRefused('get', { status: 404, body: undefined });
              else if (e.type === 'ERROR') again = true;
            },
          },
          (timeout + 30) * 1000,
          signal,
        );
        if (end.how === 'http') {
          if (end.status === 403) {
            this.#secretRefused('watch', { status: 403, body: end.body });
            await sleep(this.#s.retryPeriodMs * 4, signal);
          } else if (end.status !== 410) throw new Error(`watch ${this.#secretsPath}: ${end.status}`);
        }
      } catch (err) {
        if (signal.aborted) return;
        if (this.#secretStatus === null) this.#setSecretStatus({ status: 'unreachable', detail: (err as Error).message });
        await sleep(backoff.next(), signal);
      }
    }
  }

  #setSecret(o: SecretObject): void {
    const rv = o.metadata.resourceVersion ?? '';
    if (this.#secret && this.#secretStatus === 'ok' && !newer(rv, this.#secret.metadata.resourceVersion)) return;
    this.#secret = o;
    if (this.#secretProblem) {
      this.#secretProblem = '';
      this.#log('info', `ACME: the Secret ${this.#where} can be read again`);
    }
    const data: Record<string, string> = {};
    let bytes = 0;
    for (const [k, v] of Object.entries(o.data ?? {})) {
      bytes += decodedBytes(v);
      if (ACME_KEY_PREFIXES.some((p) => k.startsWith(p))) data[k] = Buffer.from(v, 'base64').toString('utf8');
    }
    this.#setSecretStatus({ status: 'ok', resourceVersion: rv, data, bytes });
  }

  #setSecretStatus(state: AcmeSecretState): void {
    this.#secretStatus = state.status;
    if (state.status !== 'ok') this.#secret = null;
    this.#emit({ type: 'acme-secret', state });
  }

  /** A refused read (`read`: the replica's view of the Secret becomes missing or forbidden) or write. */
  #secretRefused(verb: string, a: JsonAnswer, read = true): string {
    const s = asStatus(a.body);
    let problem: string;
    if (a.status === 404) {
      const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: ACME_STATE_NAME, namespace: this.#s.namespace }, type: 'Opaque' });
      problem = `ACME: the Secret ${this.#where} does not exist, and Gatehouse does not create it (it is given no create permission): certificates are not ordered nor shared, self-signed placeholders keep serving. Create it (deploy/base/acme-state.yaml does): echo '${manifest}' | kubectl create -f -`;
    } else if (a.status === 403) {
      problem = `RBAC: Gatehouse may not ${verb} the Secret ${this.#where} (${s?.message ?? '403 Forbidden'}): certificates are not ordered nor shared, self-signed placeholders keep serving. Missing rule: ${acmeRbacRule('', 'secrets', this.#s.namespace)}`;
    } else {
      return `${verb} the Secret ${this.#where}: ${a.status}${s?.message ? ` ${s.message}` : ''}`;
    }
    if (problem !== this.#secretProblem) {
      this.#secretProblem = problem;
      this.#log('warn', problem, { secret: this.#where, status: a.status, ...(a.status === 403 ? { rule: acmeRbacRule('', 'secrets', this.#s.namespace) } : {}) });
    }
    const status = a.status === 404 ? 'missing' : 'forbidden';
    if (read && this.#secretStatus !== status) this.#setSecretStatus({ status, detail: problem });
    return problem;
  }

  /**
   * Sets and removes keys of the Secret, only while this replica holds the lease: the lease is
   * renewed first (a replica that lost it learns it here and writes nothing), then the Secret is
   * replaced with the resourceVersion it was read at (a conflict reads it again and retries).
   * Returns why nothing was written (`lost`: the lease is not held), or null.
   */
  #write(set: Record<string, string>, remove: readonly string[]): Promise<{ error: string; lost?: boolean } | null> {
    return this.#serial(async () => {
      if (!this.#leading) return { error: `this replica does not hold the Lease ${this.#where}; nothing written`, lost: true };
      const r = await this.#tryAcquireOrRenew();
      if (!r.ok) {
        if (r.held !== undefined) this.#setLeading(false, r.held, `the Lease is held by ${r.held} now`);
        return { error: `the Lease ${this.#where} could not be renewed before writing (${r.why}); nothing written`, lost: true };
      }
      const path = `${this.#secretsPath}/${ACME_STATE_NAME}`;
      let base = this.#secret;
      for (let attempt = 0; attempt < 5; attempt++) {
        if (attempt > 0 || !base) {
          if (!this.#leading || Date.now() - this.#lastRenew >= this.#s.renewDeadlineMs) return { error: `the Lease ${this.#where} was lost while writing; nothing written`, lost: true };
          const g = await this.#client.get(path, {}, 10_000, this.#stop.signal);
          if (g.status !== 200) return { error: this.#secretRefused('get', g) };
          base = g.body as SecretObject;
          this.#setSecret(base);
        }
        const data: Record<string, string> = { ...(base.data ?? {}) };
        for (const k of remove) delete data[k];
        for (const [k, v] of Object.entries(set)) data[k] = Buffer.from(v, 'utf8').toString('base64');
        let bytes = 0;
        for (const v of Object.values(data)) bytes += decodedBytes(v);
        if (bytes > MAX_SECRET_BYTES) return { error: `the Secret ${this.#where} would hold ${bytes} bytes, over Kubernetes' limit of ${MAX_SECRET_BYTES} bytes for one Secret; nothing written` };
        const { stringData: _s, ...rest } = base as SecretObject & { stringData?: unknown };
        const p = await this.#client.put(path, { ...rest, apiVersion: 'v1', kind: 'Secret', data }, 10_000);
        if (p.status === 200) {
          this.#setSecret(p.body as SecretObject);
          return null;
        }
        if (p.status !== 409) {
          const s = asStatus(p.body);
          if (p.status === 403 || p.status === 404) return { error: this.#secretRefused('update', p, p.status === 404) };
          return { error: `update the Secret ${this.#where}: ${p.status}${s?.message ? ` ${s.message}` : ''}` };
        }
      }
      return { error: `the Secret ${this.#where} kept changing under this replica's writes (409 five times); nothing written` };
    });
  }
}

/** The rule of deploy/base/rbac.yaml's Role that lets Gatehouse use one of its two ACME objects. */
export function acmeRbacRule(group: string, resource: string, namespace: string): string {
  return `apiGroups: [${JSON.stringify(group)}], resources: [${JSON.stringify(resource)}], resourceNames: [${JSON.stringify(ACME_STATE_NAME)}], verbs: ["get","watch","update"] (in a Role in namespace ${JSON.stringify(namespace)}; deploy/base/rbac.yaml has it)`;
}
