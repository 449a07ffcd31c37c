// One informer (client-go calls it a reflector): list a kind, then watch it from the list's
// resourceVersion with bookmarks, keeping a local copy. A watch that ends or breaks resumes from
// the last resourceVersion seen (events or bookmarks), so nothing is lost and nothing is listed
// again; a 410 Expired (the revision was compacted) lists again and keeps only the difference: an
// object whose content did not change is not a change. Failures retry with jittered exponential
// backoff. A 403 (RBAC) or 404 (CRD not installed) is reported and checked again now and then.
import { Backoff, sleep } from './backoff.js';
import { asStatus, type ApiObject, type ApiStatus, type KubeClient, type WatchEvent } from './client.js';
import { apiVersionOf, collectionPath, type WatchedKind } from './kinds.js';
import { trimObject, type StoredObject } from './objects.js';

export interface ReflectorHooks {
  /** The local copy changed (only called once synced). */
  changed(): void;
  /** The first list was applied, or the kind was found forbidden or absent (it then counts as empty). */
  synced(): void;
  /** 403 on list or watch: the status the server gave. */
  forbidden(status: ApiStatus | undefined): void;
  /** 404: the kind is not served (its CRD is not installed, or was removed). */
  absent(): void;
  /** A list or watch succeeded (true) or failed to reach the server (false). */
  connection(ok: boolean, detail: string): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export interface ReflectorOptions {
  pageSize?: number;
  /** The server ends a watch after this long (client-go: 5-10 min, random), and it is resumed. */
  watchTimeoutSeconds?: () => number;
  /** How long a forbidden kind waits before it is listed again. */
  recheckMs?: number;
  backoff?: Backoff;
}

type Outcome = 'resume' | 'relist' | 'backoff' | 'forbidden' | 'absent' | 'stopped';

export class Reflector {
  readonly kind: WatchedKind;
  readonly version: string;
  readonly namespace: string | null;
  readonly #client: KubeClient;
  readonly #hooks: ReflectorHooks;
  readonly #pageSize: number;
  readonly #watchTimeout: () => number;
  readonly #recheckMs: number;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  /** `namespace/name` → object. */
  items = new Map<string, StoredObject>();
  #rv = '';
  #synced = false;
  #state: 'ok' | 'forbidden' | 'absent' = 'ok';
  #done: Promise<void> | null = null;

  constructor(client: KubeClient, kind: WatchedKind, version: string, namespace: string | null, hooks: ReflectorHooks, o: ReflectorOptions = {}) {
    this.kind = kind;
    this.version = version;
    this.namespace = namespace;
    this.#client = client;
    this.#hooks = hooks;
    this.#pageSize = o.pageSize ?? 500;
    this.#watchTimeout = o.watchTimeoutSeconds ?? (() => 300 + Math.floor(Math.random() * 300));
    this.#recheckMs = o.recheckMs ?? 60_000;
    this.#backoff = o.backoff ?? new Backoff();
  }

  get synced(): boolean {
    return this.#synced;
  }

  get state(): 'ok' | 'forbidden' | 'absent' {
    return this.#state;
  }

  /** The resourceVersion the next watch resumes from ('' before the first list, or after a 410). */
  get resourceVersion(): string {
    return this.#rv;
  }

  get #path(): string {
    return collectionPath(this.kind, this.version, this.namespace);
  }

  get #apiVersion(): string {
    return apiVersionOf(this.kind.group, this.version);
  }

  start(): void {
    this.#done ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      let outcome: Outcome;
      try {
        outcome = this.#rv === '' ? await this.#list() : await this.#watch();
      } catch (err) {
        if (signal.aborted) break;
        this.#hooks.connection(false, (err as Error).message);
        outcome = 'backoff';
      }
      if (signal.aborted) break;
      switch (outcome) {
        case 'resume':
          break;
        case 'relist':
          this.#rv = '';
          break;
        case 'backoff': {
          const ms = this.#backoff.next();
          this.#hooks.debug(`${this.#path}: retrying in ${ms} ms`, { resourceVersion: this.#rv });
          await sleep(ms, signal);
          break;
        }
        case 'forbidden':
        case 'absent':
          await sleep(Math.round(this.#recheckMs * (0.75 + Math.random() / 2)), signal);
          this.#rv = '';
          break;
        default:
          return;
      }
    }
  }

  /** A failed answer: what to do next. */
  #refused(status: number, body: unknown): Outcome {
    if (status === 410) return 'relist';
    if (status === 403) {
      this.#becomeSynced();
      if (this.#state !== 'forbidden') {
        this.#state = 'forbidden';
        this.#hooks.forbidden(asStatus(body));
      }
      return 'forbidden';
    }
    if (status === 404) {
      // The CRD went away: so did its objects.
      if (this.items.size > 0) {
        this.items = new Map();
        if (this.#synced) this.#hooks.changed();
      }
      this.#becomeSynced();
      if (this.#state !== 'absent') {
        this.#state = 'absent';
        this.#hooks.absent();
      }
      return 'absent';
    }
    const s = asStatus(body);
    this.#hooks.connection(false, `${this.#path}: ${status}${s?.message ? ` ${s.message}` : ''}`);
    return 'backoff';
  }

  #becomeSynced(): void {
    if (this.#synced) return;
    this.#synced = true;
    this.#hooks.synced();
  }

  /** A full list, in pages, applied as the difference with what is known. */
  async #list(): Promise<Outcome> {
    const fresh = new Map<string, StoredObject>();
    let cont: string | undefined;
    let rv = '';
    do {
      const q = { limit: this.#pageSize, continue: cont, fieldSelector: this.kind.fieldSelector };
      const a = await this.#client.get(this.#path, q, 60_000, this.#stop.signal);
      if (a.status !== 200) {
        // An expired continue token: start the list again.
        if (a.status === 410 && cont) return 'relist';
        return this.#refused(a.status, a.body);
      }
      const list = a.body as { metadata?: { resourceVersion?: string; continue?: string }; items?: ApiObject[] };
      for (const o of list.items ?? []) {
        const t = trimObject(this.kind.kind, this.#apiVersion, o);
        fresh.set(`${t.metadata.namespace}/${t.metadata.name}`, t);
      }
      rv = list.metadata?.resourceVersion ?? '';
      cont = list.metadata?.continue || undefined;
    } while (cont);
    this.#hooks.connection(true, this.#path);
    this.#backoff.reset();
    if (this.#state !== 'ok') this.#hooks.debug(`${this.#path}: listed again after ${this.#state}`);
    this.#state = 'ok';
    // Unchanged objects keep their entry from before (what was checked of them stays valid).
    let changed = fresh.size !== this.items.size;
    for (const [k, v] of fresh) {
      const before = this.items.get(k);
      if (before?.fingerprint === v.fingerprint) {
        if (v.validationMessages !== undefined) before.validationMessages = v.validationMessages;
        else delete before.validationMessages;
        fresh.set(k, before);
      } else changed = true;
    }
    if (changed) this.items = fresh;
    this.#rv = rv;
    this.#hooks.debug(`${this.#path}: listed ${fresh.size} at resourceVersion ${rv}${changed ? '' : ' (no change)'}`);
    if (!this.#synced) this.#becomeSynced();
    else if (changed) this.#hooks.changed();
    return 'resume';
  }

  async #watch(): Promise<Outcome> {
    const timeout = this.#watchTimeout();
    let outcome: Outcome | null = null;
    let got = false;
    const end = await this.#client.watch(
      this.#path,
      { resourceVersion: this.#rv, allowWatchBookmarks: true, timeoutSeconds: timeout, fieldSelector: this.kind.fieldSelector },
      {
        open: () => this.#hooks.connection(true, this.#path),
        event: (e) => {
          if (outcome) return;
          if (!got) {
            got = true;
            this.#backoff.reset();
          }
          outcome = this.#event(e);
        },
      },
      (timeout + 30) * 1000,
      this.#stop.signal,
    );
    if (end.how === 'http') return this.#refused(end.status, end.body);
    // A clean end (the server's timeout): resume from the last resourceVersion seen.
    return outcome ?? 'resume';
  }

  /** One watch event; an outcome ends the watch. */
  #event(e: WatchEvent): Outcome | null {
    const o = e.object;
    switch (e.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const t = trimObject(this.kind.kind, this.#apiVersion, o);
        const key = `${t.metadata.namespace}/${t.metadata.name}`;
        const before = this.items.get(key);
        this.#rv = o.metadata.resourceVersion ?? this.#rv;
        if (before?.fingerprint === t.fingerprint) {
          // Only the status changed (e.g. `--write-status`'s own write): not a configuration change.
          if (t.validationMessages !== undefined) before.validationMessages = t.validationMessages;
          else delete before.validationMessages;
          return null;
        }
        this.items.set(key, t);
        this.#hooks.changed();
        return null;
      }
      case 'DELETED': {
        const key = `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
        this.#rv = o.metadata.resourceVersion ?? this.#rv;
        if (this.items.delete(key)) this.#hooks.changed();
        return null;
      }
      case 'BOOKMARK':
        this.#rv = o.metadata?.resourceVersion ?? this.#rv;
        return null;
      case 'ERROR': {
        const code = o.code;
        this.#hooks.debug(`${this.#path}: watch error ${code} ${o.reason ?? ''}: ${o.message ?? ''}`);
        if (code === 410) return 'relist';
        return this.#refused(code ?? 500, o);
      }
      default:
        return null;
    }
  }
}
