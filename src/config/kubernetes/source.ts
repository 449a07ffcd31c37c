// The Kubernetes configuration source (`gatehouse run --kubernetes`): discovers which kinds the API
// server serves (and at which version), runs one informer per kind and namespace scope, keeps what
// they hold, and says when the first full list of every kind is in ("synced") and, after that, when
// something changed - a burst of changes once, after 100 ms of quiet (istiod's debounce), and at
// most 500 ms after the first change of the burst, so that a change is applied within a second
// even while others keep coming. A kind that is not served (its CRD is not installed) or that RBAC
// forbids is logged once, with the rule that is missing, and counts as empty; the others go on.
// Runs on the configuration thread (src/workers/config-worker.ts): nothing here touches requests.
import { Backoff, sleep } from './backoff.js';
import { KubeClient, type ApiStatus } from './client.js';
import { connect, type KubeConnection } from './credentials.js';
import { namespacesFor, qualifiedResource, rbacRule, watchedKinds, type WatchedKind } from './kinds.js';
import { compareObjects, type StoredObject } from './objects.js';
import { Reflector, type ReflectorOptions } from './reflector.js';
import { StatusWriter, type ValidationMessage } from './status.js';

export interface KubeSourceOptions {
  kubeconfig?: string | undefined;
  /** `--watch-namespaces`; null: every namespace. */
  watchNamespaces: string[] | null;
  /** `--namespace`: Secrets are also read there. */
  gatewayNamespace: string;
  /** Where the mesh ConfigMap `istio` is read. */
  rootNamespace: string;
  debounceMs?: number;
  debounceMaxMs?: number;
  /** How often kinds that were absent or forbidden are looked for again. */
  recheckMs?: number;
  /** Reconnect backoff (ms). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** `--write-status`: Istio's `status.validationMessages` on the Istio objects. */
  writeStatus?: boolean;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type KubeSourceEvent =
  | { type: 'synced' }
  | { type: 'changed' }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> | undefined };

export const DEBOUNCE_MS = 100;
export const DEBOUNCE_MAX_MS = 500;

export class KubernetesSource {
  readonly #o: KubeSourceOptions;
  readonly #emit: (e: KubeSourceEvent) => void;
  readonly #stop = new AbortController();
  #client: KubeClient | null = null;
  readonly #reflectors: Reflector[] = [];
  /** Kinds not served when last looked for. */
  #absent = new Set<WatchedKind>();
  #discovered = false;
  #synced = false;
  #connected = true;
  #timer: NodeJS.Timeout | null = null;
  #firstChange = 0;
  #loop: Promise<void> | null = null;
  #status: StatusWriter | null = null;

  constructor(o: KubeSourceOptions, emit: (e: KubeSourceEvent) => void) {
    this.#o = o;
    this.#emit = emit;
  }

  get synced(): boolean {
    return this.#synced;
  }

  /** Reads the credentials (throws when there are none), then discovers and watches in the background. */
  async start(conn?: KubeConnection): Promise<void> {
    const c = conn ?? (await connect({ kubeconfig: this.#o.kubeconfig }));
    this.#client = new KubeClient(c);
    if (this.#o.writeStatus) {
      const istio = new Map(watchedKinds().filter((k) => k.crd).map((k) => [k.kind, k]));
      this.#status = new StatusWriter(this.#client, istio, { warn: (msg, fields) => this.#log('warn', msg, fields), debug: (msg, fields) => this.#log('debug', msg, fields) });
    }
    const ns = this.#o.watchNamespaces ? this.#o.watchNamespaces.join(',') : 'all namespaces';
    this.#log('info', `watching the Kubernetes API at ${c.server} (credentials from ${c.origin}; ${ns})`, { server: c.server, credentials: c.origin, namespaces: this.#o.watchNamespaces ?? 'all' });
    this.#loop = this.#discoverLoop();
  }

  /** `--write-status` only: the validation messages each object should carry now. */
  get writeStatus(): ((desired: ReadonlyArray<{ object: StoredObject; messages: ValidationMessage[] }>) => void) | undefined {
    const w = this.#status;
    return w ? (desired) => w.update(desired) : undefined;
  }

  async stop(): Promise<void> {
    this.#status?.stop();
    this.#stop.abort();
    if (this.#timer) clearTimeout(this.#timer);
    await this.#loop;
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  /** What the informers hold, oldest first (Istio's order), then by kind/namespace/name. */
  objects(): StoredObject[] {
    const out: StoredObject[] = [];
    for (const r of this.#reflectors) for (const o of r.items.values()) out.push(o);
    return out.sort(compareObjects);
  }

  /** Objects held, by kind (for the logs). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.#reflectors) out[r.kind.kind] = (out[r.kind.kind] ?? 0) + r.items.size;
    return out;
  }

  #log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    this.#emit({ type: 'log', level, msg, fields });
  }

  async #discoverLoop(): Promise<void> {
    const signal = this.#stop.signal;
    const backoff = new Backoff(this.#o.backoffInitialMs, this.#o.backoffMaxMs);
    let pending = watchedKinds();
    while (!signal.aborted && pending.length > 0) {
      let served: Map<WatchedKind, string | null>;
      try {
        served = await this.#discover(pending);
      } catch (err) {
        if (signal.aborted) return;
        this.#connection(false, (err as Error).message);
        await sleep(backoff.next(), signal);
        continue;
      }
      backoff.reset();
      const first = !this.#discovered;
      this.#discovered = true;
      const absent: WatchedKind[] = [];
      for (const [k, version] of served) {
        if (version === null) {
          absent.push(k);
          if (!this.#absent.has(k)) {
            this.#absent.add(k);
            this.#log('warn', `${k.kind} is not served by the API server (${qualifiedResource(k)}, versions ${k.versions.join(', ')}: its CRD is not installed); it counts as empty, and is looked for again every ${Math.round(this.#recheck / 1000)} s`, { kind: k.kind, resource: qualifiedResource(k) });
          }
          continue;
        }
        if (this.#absent.delete(k)) this.#log('info', `${k.kind} is now served by the API server (${qualifiedResource(k)} ${version}); watching it`, { kind: k.kind });
        this.#watch(k, version);
      }
      pending = absent;
      if (first) this.#checkSynced();
      if (pending.length === 0) return;
      await sleep(this.#recheck, signal);
    }
  }

  get #recheck(): number {
    return this.#o.recheckMs ?? 60_000;
  }

  /** The version each kind is read at: the first of its versions the server serves; null if none. */
  async #discover(kinds: readonly WatchedKind[]): Promise<Map<WatchedKind, string | null>> {
    const client = this.#client!;
    const signal = this.#stop.signal;
    const groups = await client.get('/apis', {}, 30_000, signal);
    if (groups.status !== 200) throw new Error(`/apis: ${groups.status} ${JSON.stringify(groups.body).slice(0, 200)}`);
    this.#connection(true, '/apis');
    const servedVersions = new Map<string, string[]>();
    for (const g of (groups.body as { groups?: Array<{ name: string; versions: Array<{ version: string }> }> }).groups ?? []) {
      servedVersions.set(g.name, g.versions.map((v) => v.version));
    }
    const resources = new Map<string, Set<string> | null>();
    const resourcesOf = async (group: string, version: string): Promise<Set<string> | null> => {
      const key = `${group}/${version}`;
      if (resources.has(key)) return resources.get(key)!;
      const a = await client.get(group ? `/apis/${group}/${version}` : `/api/${version}`, {}, 30_000, signal);
      let set: Set<string> | null = null;
      if (a.status === 200) set = new Set(((a.body as { resources?: Array<{ name: string }> }).resources ?? []).map((r) => r.name));
      else if (a.status !== 404) throw new Error(`${key}: ${a.status}`);
      resources.set(key, set);
      return set;
    };
    const out = new Map<WatchedKind, string | null>();
    for (const k of kinds) {
      let chosen: string | null = null;
      for (const v of k.versions) {
        if (k.group !== '' && !servedVersions.get(k.group)?.includes(v)) continue;
        if ((await resourcesOf(k.group, v))?.has(k.resource)) {
          chosen = v;
          break;
        }
      }
      out.set(k, chosen);
    }
    return out;
  }

  #watch(k: WatchedKind, version: string): void {
    const scopes = namespacesFor(k, { watchNamespaces: this.#o.watchNamespaces, gatewayNamespace: this.#o.gatewayNamespace, rootNamespace: this.#o.rootNamespace });
    for (const ns of scopes ?? [null]) {
      const options: ReflectorOptions = {
        recheckMs: this.#recheck,
        backoff: new Backoff(this.#o.backoffInitialMs, this.#o.backoffMaxMs),
      };
      const r: Reflector = new Reflector(this.#client!, k, version, ns, this.#hooks(k, ns, () => r), options);
      this.#reflectors.push(r);
      r.start();
    }
  }

  #hooks(k: WatchedKind, ns: string | null, self: () => Reflector) {
    return {
      changed: () => this.#changed(),
      synced: () => {
        if (this.#synced) this.#changed();
        else this.#checkSynced();
      },
      forbidden: (status: ApiStatus | undefined) => {
        const where = ns === null ? 'at the cluster scope' : `in namespace ${ns}`;
        const kept = self().items.size > 0 ? 'its last known objects are kept' : 'it counts as empty';
        this.#log(
          'warn',
          `RBAC: Gatehouse may not list and watch ${qualifiedResource(k)} ${where} (${status?.message ?? '403 Forbidden'}); ${kept} and the rest keeps working. Missing rule: ${rbacRule(k, ns)}`,
          { kind: k.kind, resource: qualifiedResource(k), namespace: ns ?? undefined, rule: rbacRule(k, ns) },
        );
      },
      absent: () => {
        this.#log('warn', `${k.kind} is no longer served by the API server (${qualifiedResource(k)} ${self().version}: its CRD was removed); it counts as empty`, { kind: k.kind });
      },
      connection: (ok: boolean, detail: string) => this.#connection(ok, detail),
      debug: (msg: string, fields?: Record<string, unknown>) => this.#log('debug', msg, fields),
    };
  }

  /** Said once per loss and once per recovery, whichever informer notices. */
  #connection(ok: boolean, detail: string): void {
    if (ok === this.#connected) {
      if (!ok) this.#log('debug', `Kubernetes API still unreachable: ${detail}`);
      return;
    }
    this.#connected = ok;
    if (ok) this.#log('info', 'Kubernetes API server reachable again; resuming the watches', { detail });
    else this.#log('warn', `Kubernetes API server unreachable (${detail}); the last good configuration keeps serving, retrying with backoff`, { detail });
  }

  #checkSynced(): void {
    if (this.#synced || !this.#discovered) return;
    if (!this.#reflectors.every((r) => r.synced)) return;
    this.#synced = true;
    this.#log('info', 'first full list of every watched kind received', { objects: this.counts(), absent: [...this.#absent].map((k) => k.kind) });
    this.#emit({ type: 'synced' });
  }

  /** Debounced: 100 ms of quiet, at most 500 ms after the first change of a burst. */
  #changed(): void {
    if (!this.#synced) return;
    const now = Date.now();
    if (this.#timer) clearTimeout(this.#timer);
    else this.#firstChange = now;
    const quiet = this.#o.debounceMs ?? DEBOUNCE_MS;
    const max = this.#o.debounceMaxMs ?? DEBOUNCE_MAX_MS;
    const wait = Math.max(0, Math.min(quiet, this.#firstChange + max - now));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#emit({ type: 'changed' });
    }, wait);
  }
}
