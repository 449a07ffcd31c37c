// A Kubernetes API server stand-in for the tests (no real one can run here). It speaks the real
// protocol, as the API conventions and "Kubernetes API Concepts" describe it, closely enough for
// kubectl and @kubernetes/client-node to drive it:
// - HTTPS with a test CA, bearer-token authentication (401 Status otherwise);
// - legacy discovery: /api, /apis, /apis/<group>, /api/v1 and /apis/<group>/<version> as
//   APIVersions / APIGroupList / APIGroup / APIResourceList (verbs, namespaced, kind, singularName);
//   /openapi/v2 and /openapi/v3 answer 404 (a server with OpenAPI off: tests run kubectl with
//   --validate=false, and kubectl falls back to its compiled-in schemas for patches);
// - one global, monotonically increasing resourceVersion (etcd's revision), shared by all
//   resources; every version of a group (networking.istio.io v1/v1beta1/v1alpha3) serves the same
//   stored objects, each with its own apiVersion;
// - list (collection `metadata.resourceVersion`, `limit`/`continue` served from a snapshot of
//   the first page's revision, 410 Expired once compacted), get, create (201, 409 AlreadyExists),
//   replace (PUT: 409 Conflict on a stale resourceVersion, no new revision for a no-op), patch
//   (merge, strategic-merge as merge with its directives dropped, JSON patch), delete (200 with the
//   object), label and field selectors; Secrets validated as the real server does (data keys,
//   base64 values, at most 1 MiB of data: 422 Invalid); request bodies in JSON (a protobuf body, as client-go's
//   typed clients send for `kubectl create secret ...`, is answered 415: use manifests);
// - watch (`?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`): a chunked
//   stream of JSON lines ADDED / MODIFIED / DELETED / BOOKMARK / ERROR, replayed from the event
//   history after N, an ERROR with a 410 Expired Status when N is older than the compacted
//   history; without N, the current objects as ADDED first; an object leaving a field or label
//   selector arrives as DELETED, one entering it as ADDED, as the watch cache does;
// - faults for the tests: RBAC 403 per resource and verb (Forbidden Status as the real one words
//   it), API groups that are not installed (404 in discovery and on every path), lists held back,
//   watches broken mid-stream, history compacted, the server stopped and started on the same port
//   with its objects kept (as etcd keeps them).
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, type TestCa } from './openssl-ca.js';

export type KObj = Record<string, any>;

export interface ResourceType {
  group: string;
  /** Served versions, the preferred (storage) one first. */
  versions: string[];
  /** Plural, as in the URL. */
  resource: string;
  kind: string;
  singular: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  subresources?: string[];
}

const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

const NETWORKING = ['v1', 'v1beta1', 'v1alpha3'];
const SECURITY = ['v1', 'v1beta1'];

/** What the test server serves: the core kinds Gatehouse reads, and Istio's CRDs. */
export const RESOURCE_TYPES: ResourceType[] = [
  { group: '', versions: ['v1'], resource: 'namespaces', kind: 'Namespace', singular: 'namespace', namespaced: false, shortNames: ['ns'] },
  { group: '', versions: ['v1'], resource: 'services', kind: 'Service', singular: 'service', namespaced: true, shortNames: ['svc'], categories: ['all'], subresources: ['status'] },
  { group: '', versions: ['v1'], resource: 'pods', kind: 'Pod', singular: 'pod', namespaced: true, shortNames: ['po'], categories: ['all'], subresources: ['status'] },
  { group: '', versions: ['v1'], resource: 'secrets', kind: 'Secret', singular: 'secret', namespaced: true },
  { group: '', versions: ['v1'], resource: 'configmaps', kind: 'ConfigMap', singular: 'configmap', namespaced: true, shortNames: ['cm'] },
  { group: 'discovery.k8s.io', versions: ['v1'], resource: 'endpointslices', kind: 'EndpointSlice', singular: 'endpointslice', namespaced: true },
  { group: 'coordination.k8s.io', versions: ['v1'], resource: 'leases', kind: 'Lease', singular: 'lease', namespaced: true },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'gateways', kind: 'Gateway', singular: 'gateway', namespaced: true, shortNames: ['gw'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'virtualservices', kind: 'VirtualService', singular: 'virtualservice', namespaced: true, shortNames: ['vs'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'destinationrules', kind: 'DestinationRule', singular: 'destinationrule', namespaced: true, shortNames: ['dr'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'serviceentries', kind: 'ServiceEntry', singular: 'serviceentry', namespaced: true, shortNames: ['se'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'workloadentries', kind: 'WorkloadEntry', singular: 'workloadentry', namespaced: true, shortNames: ['we'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: NETWORKING, resource: 'sidecars', kind: 'Sidecar', singular: 'sidecar', namespaced: true, categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'networking.istio.io', versions: ['v1alpha3'], resource: 'envoyfilters', kind: 'EnvoyFilter', singular: 'envoyfilter', namespaced: true, categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] },
  { group: 'security.istio.io', versions: SECURITY, resource: 'authorizationpolicies', kind: 'AuthorizationPolicy', singular: 'authorizationpolicy', namespaced: true, shortNames: ['ap'], categories: ['istio-io', 'security-istio-io'], subresources: ['status'] },
  { group: 'security.istio.io', versions: SECURITY, resource: 'peerauthentications', kind: 'PeerAuthentication', singular: 'peerauthentication', namespaced: true, shortNames: ['pa'], categories: ['istio-io', 'security-istio-io'], subresources: ['status'] },
  { group: 'security.istio.io', versions: SECURITY, resource: 'requestauthentications', kind: 'RequestAuthentication', singular: 'requestauthentication', namespaced: true, shortNames: ['ra'], categories: ['istio-io', 'security-istio-io'], subresources: ['status'] },
  { group: 'telemetry.istio.io', versions: ['v1', 'v1alpha1'], resource: 'telemetries', kind: 'Telemetry', singular: 'telemetry', namespaced: true, shortNames: ['telemetry'], categories: ['istio-io', 'telemetry-istio-io'], subresources: ['status'] },
];

/** Groups backed by CRDs, which a test may leave "not installed". */
export const CRD_GROUPS = ['networking.istio.io', 'security.istio.io', 'telemetry.istio.io'];

interface Stored {
  type: ResourceType;
  obj: KObj;
}

interface HistoryEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  typeKey: string;
  /** The object after the change (for DELETED: as it was, with the deletion's revision). */
  obj: KObj;
  /** The object before the change (MODIFIED), to tell selector transitions apart. */
  prev?: KObj;
}

interface Watcher {
  typeKey: string;
  type: ResourceType;
  version: string;
  namespace: string | undefined;
  match: (o: KObj) => boolean;
  res: ServerResponse;
  bookmarks: boolean;
  timers: NodeJS.Timeout[];
  closed: boolean;
}

interface ForbidRule {
  group: string;
  resource: string;
  verbs: string[] | '*';
  namespace?: string;
}

export interface KubeApiServerOptions {
  /** Bearer tokens accepted (default: one random token, `token`). */
  tokens?: string[];
  /** Who the token belongs to, in Forbidden messages. */
  user?: string;
  /** How often an open watch that asked for bookmarks gets one (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** CRD groups not installed at start. */
  uninstalled?: string[];
}

export interface RequestLogEntry {
  method: string;
  path: string;
  query: Record<string, string>;
  /** 0 while the request is open (a watch). */
  status: number;
}

const HISTORY_LIMIT = 200_000;

const typeKeyOf = (t: Pick<ResourceType, 'group' | 'resource'>): string => `${t.group}/${t.resource}`;
const clone = <T>(v: T): T => structuredClone(v);

export class KubeApiServer {
  readonly ca: TestCa;
  readonly #cert: { certPem: string; keyPem: string };
  #tokens: Set<string>;
  readonly user: string;
  readonly bookmarkIntervalMs: number;
  #server: Server | null = null;
  #port = 0;
  readonly #sockets = new Set<Socket>();
  /** storeKey (`group/resource/ns/name`) → object. */
  readonly #store = new Map<string, Stored>();
  #rv = 1;
  #compactedRv = 0;
  #history: HistoryEvent[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #forbidden: ForbidRule[] = [];
  readonly #uninstalled: Set<string>;
  readonly #listDelays = new Map<string, number>();
  /** Continue tokens → the items of the list they continue (a snapshot at its revision). */
  readonly #continues = new Map<string, { rv: number; items: KObj[] }>();
  readonly requests: RequestLogEntry[] = [];
  readonly #observers = new Set<(e: { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: KObj }) => void>();
  readonly #interceptors = new Set<(r: { method: string; path: string; body: string; log: RequestLogEntry }) => void>();
  readonly #tmp: string;

  constructor(opts: KubeApiServerOptions = {}) {
    this.#tmp = mkdtempSync(join(tmpdir(), 'gatehouse-kube-'));
    this.ca = createCa('kube-ca', this.#tmp);
    this.#cert = this.ca.issue('apiserver', { sans: ['IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes.default.svc'] });
    this.#tokens = new Set(opts.tokens ?? [randomUUID()]);
    this.user = opts.user ?? 'system:serviceaccount:istio-system:gatehouse';
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 1000;
    this.#uninstalled = new Set(opts.uninstalled ?? []);
    for (const ns of ['default', 'kube-system', 'istio-system']) this.#seed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  }

  /** The first accepted token. */
  get token(): string {
    return [...this.#tokens][0]!;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  /** The current global resourceVersion (the last revision written). */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Open watches (for tests that wait for a client to be watching). */
  watchCount(resource?: string): number {
    let n = 0;
    for (const w of this.#watchers) if (!w.closed && (resource === undefined || w.type.resource === resource)) n++;
    return n;
  }

  /** Listens on 127.0.0.1 (`port` 0: any; a stopped server restarts on its old port). */
  async start(port = this.#port): Promise<void> {
    if (this.#server) return;
    const server = createServer({ cert: this.#cert.certPem, key: this.#cert.keyPem }, (req, res) => this.#handle(req, res));
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
  }

  /** Stops listening and drops every connection (watches break as when the process dies); objects are kept. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = null;
    for (const w of this.#watchers) this.#closeWatcher(w);
    this.#watchers.clear();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Stops and removes the temporary files. */
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.#tmp, { recursive: true, force: true });
  }

  /** Writes a kubeconfig for this server (CA data, bearer token) and returns its path. */
  kubeconfig(opts: { token?: string; namespace?: string; file?: string } = {}): string {
    const file = opts.file ?? join(this.#tmp, `kubeconfig-${randomUUID().slice(0, 8)}.yaml`);
    const ca = Buffer.from(this.ca.certPem).toString('base64');
    writeFileSync(
      file,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: test',
        '  cluster:',
        `    server: ${this.url}`,
        `    certificate-authority-data: ${ca}`,
        'users:',
        '- name: test',
        '  user:',
        `    token: ${opts.token ?? this.token}`,
        'contexts:',
        '- name: test',
        '  context:',
        '    cluster: test',
        '    user: test',
        `    namespace: ${opts.namespace ?? 'default'}`,
        'current-context: test',
        '',
      ].join('\n'),
    );
    return file;
  }

  #defaultKubeconfig: string | null = null;

  /** One kubeconfig written on first use (the server keeps its port across stop/start). */
  get defaultKubeconfig(): string {
    return (this.#defaultKubeconfig ??= this.kubeconfig({ file: join(this.#tmp, 'kubeconfig.yaml') }));
  }

  /** A temporary folder that lives as long as the server (kubectl's cache, manifests). */
  get tmpDir(): string {
    return this.#tmp;
  }

  // ---- faults and controls ------------------------------------------------------------------

  setTokens(tokens: string[]): void {
    this.#tokens = new Set(tokens);
  }

  /** RBAC: `verbs` on `group/resource` (`resource/subresource` for one; in `namespace`, or everywhere) answer 403 Forbidden. */
  forbid(group: string, resource: string, verbs: string[] | '*' = '*', namespace?: string): void {
    this.#forbidden.push({ group, resource, verbs, ...(namespace !== undefined ? { namespace } : {}) });
  }

  allow(group: string, resource: string): void {
    for (let i = this.#forbidden.length - 1; i >= 0; i--) {
      const r = this.#forbidden[i]!;
      if (r.group === group && r.resource === resource) this.#forbidden.splice(i, 1);
    }
  }

  /** A CRD group disappears (its objects are kept, as if the CRD were reinstalled later) or comes back. */
  uninstall(group: string): void {
    this.#uninstalled.add(group);
    for (const w of [...this.#watchers]) if (w.type.group === group) this.#endWatch(w);
  }

  install(group: string): void {
    this.#uninstalled.delete(group);
  }

  /** Lists of `resource` are answered `ms` late (0: no delay). */
  delayList(resource: string, ms: number): void {
    if (ms > 0) this.#listDelays.set(resource, ms);
    else this.#listDelays.delete(resource);
  }

  /** Breaks every open watch (of `resource`, or all) mid-stream: the socket is destroyed, no last chunk. */
  breakWatches(resource?: string): number {
    let n = 0;
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.type.resource !== resource) continue;
      this.#closeWatcher(w);
      this.#watchers.delete(w);
      w.res.socket?.destroy();
      n++;
    }
    return n;
  }

  /**
   * Calls `f` with every change as it is stored, before the request that made it is answered (a
   * test can react to a write at the exact point it happens, e.g. change another object then).
   * Returns a function that removes it.
   */
  onChange(f: (e: { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: KObj }) => void): () => void {
    this.#observers.add(f);
    return () => this.#observers.delete(f);
  }

  /**
   * Calls `f` with every request once its body has arrived, before it is handled (a test can make
   * another client's write land first, e.g. to make this request's update a 409 Conflict); `log`
   * is its entry in `requests`. Returns a function that removes it.
   */
  onRequest(f: (r: { method: string; path: string; body: string; log: RequestLogEntry }) => void): () => void {
    this.#interceptors.add(f);
    return () => this.#interceptors.delete(f);
  }

  /** Forgets the event history: a watch resuming from an older revision gets 410 Expired, as after etcd compaction. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history = [];
    this.#continues.clear();
  }

  // ---- direct store access (test setup without kubectl) --------------------------------------

  /** Creates or replaces an object as a client would (revision, events); returns the stored object. */
  put(obj: KObj): KObj {
    const type = this.#typeOf(obj);
    const ns = type.namespaced ? (obj.metadata?.namespace ?? 'default') : undefined;
    const key = this.#storeKey(type, ns, obj.metadata.name);
    const existing = this.#store.get(key);
    const body = clone(obj);
    if (ns !== undefined) body.metadata.namespace = ns;
    if (existing) {
      delete body.metadata.resourceVersion;
      return this.#update(type, existing.obj, body).obj;
    }
    return this.#create(type, body);
  }

  /** Creates or replaces many objects at once (one revision each). */
  putAll(objs: KObj[]): void {
    for (const o of objs) this.put(o);
  }

  remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): boolean {
    const type = this.#typeOf({ apiVersion, kind });
    const key = this.#storeKey(type, type.namespaced ? (namespace ?? 'default') : undefined, name);
    const s = this.#store.get(key);
    if (!s) return false;
    this.#delete(type, key, s.obj);
    return true;
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): KObj | undefined {
    const type = this.#typeOf({ apiVersion, kind });
    const s = this.#store.get(this.#storeKey(type, type.namespaced ? (namespace ?? 'default') : undefined, name));
    return s ? this.#served(s.obj, type, apiVersion.includes('/') ? apiVersion.split('/')[1]! : apiVersion) : undefined;
  }

  // ---- storage ---------------------------------------------------------------------------------

  #typeOf(obj: KObj): ResourceType {
    const av = String(obj.apiVersion ?? '');
    const group = av.includes('/') ? av.slice(0, av.indexOf('/')) : '';
    const version = av.includes('/') ? av.slice(av.indexOf('/') + 1) : av;
    const t = RESOURCE_TYPES.find((x) => x.group === group && x.kind === obj.kind && x.versions.includes(version));
    if (!t) throw new Error(`the test API server does not serve ${obj.kind} ${av}`);
    return t;
  }

  #storeKey(t: ResourceType, ns: string | undefined, name: string): string {
    return `${typeKeyOf(t)}/${ns ?? ''}/${name}`;
  }

  #seed(obj: KObj): void {
    this.#create(this.#typeOf(obj), obj);
  }

  #nextRv(): number {
    return ++this.#rv;
  }

  #create(type: ResourceType, body: KObj): KObj {
    const rv = this.#nextRv();
    const obj = clone(body);
    obj.metadata = { ...obj.metadata, uid: randomUUID(), resourceVersion: String(rv), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
    if (type.group !== '' && type.group !== 'discovery.k8s.io' && type.group !== 'coordination.k8s.io') obj.metadata.generation = 1;
    delete obj.metadata.deletionTimestamp;
    const ns = type.namespaced ? obj.metadata.namespace : undefined;
    this.#store.set(this.#storeKey(type, ns, obj.metadata.name), { type, obj });
    this.#record({ rv, type: 'ADDED', typeKey: typeKeyOf(type), obj });
    return obj;
  }

  /** An update; a no-op (same content) keeps the revision and sends no event, as the real server. */
  #update(type: ResourceType, current: KObj, body: KObj): { obj: KObj; changed: boolean } {
    const next = clone(body);
    const meta = current.metadata;
    next.metadata = { ...next.metadata, uid: meta.uid, creationTimestamp: meta.creationTimestamp, resourceVersion: meta.resourceVersion };
    if (meta.generation !== undefined) next.metadata.generation = meta.generation;
    delete next.status;
    if (current.status !== undefined) next.status = clone(current.status);
    if (canonical(next) === canonical(current)) return { obj: current, changed: false };
    if (meta.generation !== undefined && canonical(withoutMeta(next)) !== canonical(withoutMeta(current))) next.metadata.generation = meta.generation + 1;
    const rv = this.#nextRv();
    next.metadata.resourceVersion = String(rv);
    const ns = type.namespaced ? next.metadata.namespace : undefined;
    this.#store.set(this.#storeKey(type, ns, next.metadata.name), { type, obj: next });
    this.#record({ rv, type: 'MODIFIED', typeKey: typeKeyOf(type), obj: next, prev: current });
    return { obj: next, changed: true };
  }

  #delete(type: ResourceType, key: string, current: KObj): KObj {
    this.#store.delete(key);
    const rv = this.#nextRv();
    const obj = clone(current);
    obj.metadata.resourceVersion = String(rv);
    this.#record({ rv, type: 'DELETED', typeKey: typeKeyOf(type), obj });
    return obj;
  }

  #record(e: HistoryEvent): void {
    this.#history.push(e);
    // Bounded, as etcd compacts: the oldest half goes once the history is long.
    if (this.#history.length > HISTORY_LIMIT) {
      const drop = this.#history.splice(0, HISTORY_LIMIT / 2);
      this.#compactedRv = drop[drop.length - 1]!.rv;
    }
    for (const w of this.#watchers) if (w.typeKey === e.typeKey) this.#deliver(w, e);
    // After the watchers: a change an observer makes reaches them after this one.
    for (const f of [...this.#observers]) f({ type: e.type, object: clone(e.obj) });
  }

  /** The object as `version` serves it. */
  #served(obj: KObj, type: ResourceType, version: string): KObj {
    const o = clone(obj);
    o.apiVersion = type.group ? `${type.group}/${version}` : version;
    o.kind = type.kind;
    return o;
  }

  #inScope(obj: KObj, type: ResourceType, namespace: string | undefined): boolean {
    return !type.namespaced || namespace === undefined || obj.metadata.namespace === namespace;
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? 'GET';
    // Logged on arrival (a watch may never finish); the status once it is known.
    const entry: RequestLogEntry = { method, path: url.pathname, query, status: 0 };
    this.requests.push(entry);
    res.once('finish', () => (entry.status = res.statusCode));
    res.once('close', () => (entry.status ||= res.statusCode));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = Buffer.concat(chunks).toString('utf8');
        for (const f of [...this.#interceptors]) f({ method, path: url.pathname, body, log: entry });
        this.#route(req, res, url, method, body);
      } catch (err) {
        if (!res.headersSent) status(res, 500, 'InternalError', `test API server: ${(err as Error).stack ?? err}`);
        else res.destroy();
      }
    });
  }

  #route(req: IncomingMessage, res: ServerResponse, url: URL, method: string, body: string): void {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (path === '/healthz' || path === '/readyz' || path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      return;
    }
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
    if (!this.#tokens.has(token)) {
      status(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    if (path === '/version') {
      json(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-gatehouse-test', gitCommit: '0000000', gitTreeState: 'clean', buildDate: '2025-01-01T00:00:00Z', goVersion: 'go1.23.4', compiler: 'gc', platform: 'linux/amd64' });
      return;
    }
    if (path === '/api') {
      json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.#port}` }] });
      return;
    }
    if (path === '/apis') {
      json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: this.#groups().map((g) => this.#apiGroup(g)) });
      return;
    }
    const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
    let group: string;
    let rest: string[];
    if (segs[0] === 'api') {
      if (segs[1] !== 'v1') return notFound(res);
      group = '';
      rest = segs.slice(1);
    } else if (segs[0] === 'apis' && segs.length >= 2) {
      group = segs[1]!;
      if (!this.#groups().includes(group)) return notFound(res);
      if (segs.length === 2) {
        json(res, 200, { ...this.#apiGroup(group), kind: 'APIGroup', apiVersion: 'v1' });
        return;
      }
      rest = segs.slice(2);
    } else {
      return notFound(res);
    }
    const version = rest[0]!;
    const typesHere = RESOURCE_TYPES.filter((t) => t.group === group && t.versions.includes(version));
    if (typesHere.length === 0) return notFound(res);
    rest = rest.slice(1);
    if (rest.length === 0) {
      if (method !== 'GET') return methodNotAllowed(res);
      json(res, 200, { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources: this.#resourceList(typesHere) });
      return;
    }
    // [namespaces/<ns>/]<resource>[/<name>[/<subresource>]]
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1]!;
      rest = rest.slice(2);
    }
    const type = typesHere.find((t) => t.resource === rest[0]);
    if (!type) return notFound(res);
    if (!type.namespaced && namespace !== undefined) return notFound(res);
    const name = rest[1];
    const subresource = rest[2];
    if (rest.length > 3 || (subresource !== undefined && !(type.subresources ?? []).includes(subresource))) return notFound(res);
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    const verb = method === 'GET' ? (name === undefined ? (watch ? 'watch' : 'list') : 'get') : method === 'POST' ? 'create' : method === 'PUT' ? 'update' : method === 'PATCH' ? 'patch' : method === 'DELETE' ? (name === undefined ? 'deletecollection' : 'delete') : '';
    if (!verb) return methodNotAllowed(res);
    // RBAC names a subresource `<resource>/<subresource>`, as the real authorizer does.
    const rbacResource = subresource ? `${type.resource}/${subresource}` : type.resource;
    if (this.#isForbidden(type, rbacResource, verb, namespace)) {
      const scope = namespace !== undefined ? `in the namespace "${namespace}"` : 'at the cluster scope';
      const what = type.group ? `${type.resource}.${type.group}` : type.resource;
      const named = name !== undefined ? ` "${name}"` : '';
      status(res, 403, 'Forbidden', `${what}${named} is forbidden: User "${this.user}" cannot ${verb} resource "${rbacResource}" in API group "${type.group}" ${scope}`, { ...(name !== undefined ? { name } : {}), group: type.group, kind: type.resource });
      return;
    }
    const ctx: Ctx = { res, url, type, version, namespace, name, subresource };
    switch (verb) {
      case 'list': {
        const delay = this.#listDelays.get(type.resource);
        if (delay) setTimeout(() => this.#safe(res, () => this.#list(ctx)), delay);
        else this.#list(ctx);
        return;
      }
      case 'watch':
        return this.#watch(ctx);
      case 'get':
        return this.#get(ctx);
      case 'create':
        return this.#createReq(ctx, body, req);
      case 'update':
        return this.#replaceReq(ctx, body);
      case 'patch':
        return this.#patchReq(ctx, body, String(req.headers['content-type'] ?? ''));
      case 'delete':
        return this.#deleteReq(ctx);
      default:
        return methodNotAllowed(res);
    }
  }

  #safe(res: ServerResponse, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (!res.headersSent) status(res, 500, 'InternalError', String(err));
    }
  }

  #groups(): string[] {
    const out: string[] = [];
    for (const t of RESOURCE_TYPES) if (t.group && !out.includes(t.group) && !this.#uninstalled.has(t.group)) out.push(t.group);
    return out;
  }

  #apiGroup(group: string): KObj {
    const versions = RESOURCE_TYPES.filter((t) => t.group === group).flatMap((t) => t.versions);
    const unique = [...new Set(versions)].sort(compareKubeVersions);
    const gv = (v: string): KObj => ({ groupVersion: `${group}/${v}`, version: v });
    return { name: group, versions: unique.map(gv), preferredVersion: gv(unique[0]!) };
  }

  #resourceList(types: ResourceType[]): KObj[] {
    const out: KObj[] = [];
    for (const t of types) {
      out.push({
        name: t.resource,
        singularName: t.singular,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: VERBS,
        ...(t.shortNames ? { shortNames: t.shortNames } : {}),
        ...(t.categories ? { categories: t.categories } : {}),
        storageVersionHash: Buffer.from(`${t.group}/${t.versions[0]}/${t.kind}`).toString('base64').slice(0, 11),
      });
      for (const sub of t.subresources ?? []) out.push({ name: `${t.resource}/${sub}`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] });
    }
    return out;
  }

  #isForbidden(type: ResourceType, resource: string, verb: string, namespace: string | undefined): boolean {
    return this.#forbidden.some(
      (r) => r.group === type.group && (r.resource === resource || r.resource === '*') && (r.verbs === '*' || r.verbs.includes(verb)) && (r.namespace === undefined || r.namespace === namespace),
    );
  }

  #matcher(url: URL, type: ResourceType, namespace: string | undefined): ((o: KObj) => boolean) | string {
    const labels = parseLabelSelector(url.searchParams.get('labelSelector') ?? '');
    if (typeof labels === 'string') return labels;
    const fields = parseFieldSelector(url.searchParams.get('fieldSelector') ?? '');
    if (typeof fields === 'string') return fields;
    return (o) => this.#inScope(o, type, namespace) && labels(o.metadata?.labels ?? {}) && fields(o);
  }

  #currentItems(type: ResourceType, match: (o: KObj) => boolean): KObj[] {
    const prefix = `${typeKeyOf(type)}/`;
    const keys = [...this.#store.keys()].filter((k) => k.startsWith(prefix)).sort();
    const out: KObj[] = [];
    for (const k of keys) {
      const s = this.#store.get(k)!;
      if (match(s.obj)) out.push(s.obj);
    }
    return out;
  }

  #list(c: Ctx): void {
    const { res, url, type, version, namespace } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const match = this.#matcher(url, type, namespace);
    if (typeof match === 'string') return status(res, 400, 'BadRequest', match);
    const limit = Number(url.searchParams.get('limit') ?? '0');
    const cont = url.searchParams.get('continue');
    let items: KObj[];
    let rv: number;
    if (cont) {
      const snap = this.#continues.get(cont);
      if (!snap) return status(res, 410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.');
      this.#continues.delete(cont);
      items = snap.items;
      rv = snap.rv;
    } else {
      const asked = url.searchParams.get('resourceVersion');
      if (asked && asked !== '0' && Number(asked) > this.#rv) return status(res, 504, 'Timeout', `Too large resource version: ${asked}, current: ${this.#rv}`, { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
      items = this.#currentItems(type, match);
      rv = this.#rv;
    }
    const metadata: KObj = { resourceVersion: String(rv) };
    if (limit > 0 && items.length > limit) {
      const token = Buffer.from(JSON.stringify({ rv, start: randomUUID() })).toString('base64');
      this.#continues.set(token, { rv, items: items.slice(limit) });
      metadata.continue = token;
      metadata.remainingItemCount = items.length - limit;
      items = items.slice(0, limit);
    }
    json(res, 200, { kind: `${type.kind}List`, apiVersion: type.group ? `${type.group}/${version}` : version, metadata, items: items.map((o) => this.#served(o, type, version)) });
  }

  #watch(c: Ctx): void {
    const { res, url, type, version, namespace } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const match = this.#matcher(url, type, namespace);
    if (typeof match === 'string') return status(res, 400, 'BadRequest', match);
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    const from = rvParam === '' || rvParam === '0' ? null : Number(rvParam);
    if (from !== null && !Number.isFinite(from)) return status(res, 400, 'BadRequest', `invalid resource version: ${rvParam}`);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = { typeKey: typeKeyOf(type), type, version, namespace, match, res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', timers: [], closed: false };
    if (from !== null && from < this.#compactedRv) {
      // As the real server: the watch is accepted, then one ERROR event with a 410 Expired Status.
      writeEvent(res, 'ERROR', statusBody(410, 'Expired', `too old resource version: ${from} (${this.#compactedRv})`));
      res.end();
      return;
    }
    if (from === null) {
      for (const o of this.#currentItems(type, match)) writeEvent(res, 'ADDED', this.#served(o, type, version));
    } else {
      for (const e of this.#history) if (e.rv > from && e.typeKey === w.typeKey) this.#deliver(w, e);
    }
    this.#watchers.add(w);
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    if (timeout > 0) w.timers.push(setTimeout(() => this.#endWatch(w), timeout * 1000));
    if (w.bookmarks) {
      const t = setInterval(() => {
        if (!w.closed) writeEvent(res, 'BOOKMARK', { kind: type.kind, apiVersion: type.group ? `${type.group}/${version}` : version, metadata: { resourceVersion: String(this.#rv) } });
      }, this.bookmarkIntervalMs);
      w.timers.push(t);
    }
    res.once('close', () => {
      this.#closeWatcher(w);
      this.#watchers.delete(w);
    });
  }

  /** One history event to one watcher, with selector transitions as the watch cache makes them. */
  #deliver(w: Watcher, e: HistoryEvent): void {
    if (w.closed) return;
    const now = w.match(e.obj);
    let type: string | null = null;
    if (e.type === 'ADDED') type = now ? 'ADDED' : null;
    else if (e.type === 'DELETED') type = now ? 'DELETED' : null;
    else {
      const before = e.prev ? w.match(e.prev) : now;
      if (before && now) type = 'MODIFIED';
      else if (!before && now) type = 'ADDED';
      else if (before && !now) type = 'DELETED';
    }
    if (type) writeEvent(w.res, type, this.#served(e.obj, w.type, w.version));
  }

  #closeWatcher(w: Watcher): void {
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
  }

  /** Ends a watch cleanly (its timeout, or its resource going away). */
  #endWatch(w: Watcher): void {
    this.#closeWatcher(w);
    this.#watchers.delete(w);
    w.res.end();
  }

  #get(c: Ctx): void {
    const { res, type, version, namespace, name } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const s = this.#store.get(this.#storeKey(type, namespace, name!));
    if (!s) return objectNotFound(res, type, name!);
    json(res, 200, this.#served(s.obj, type, version));
  }

  #parseBody(res: ServerResponse, body: string): KObj | null {
    // client-go's typed clients (kubectl create secret ...) send protobuf; this server reads JSON only.
    if (body.startsWith('k8s\u0000')) {
      status(res, 415, 'UnsupportedMediaType', 'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (the test API server does not read protobuf)');
      return null;
    }
    try {
      const o = JSON.parse(body) as unknown;
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error('not an object');
      return o as KObj;
    } catch (err) {
      status(res, 400, 'BadRequest', `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (${(err as Error).message})`);
      return null;
    }
  }

  /** Checks the body's kind, apiVersion, name and namespace against the URL (400 / 422 as the real server). */
  #checkBody(c: Ctx, o: KObj, name: string | undefined): boolean {
    const { res, type, version, namespace } = c;
    const av = type.group ? `${type.group}/${version}` : version;
    if (o.kind !== undefined && o.kind !== type.kind) {
      status(res, 400, 'BadRequest', `the API version in the data (${o.apiVersion}) does not match the expected API version (${av})`);
      return false;
    }
    if (o.apiVersion !== undefined && o.apiVersion !== av) {
      status(res, 400, 'BadRequest', `the API version in the data (${o.apiVersion}) does not match the expected API version (${av})`);
      return false;
    }
    o.metadata ??= {};
    if (type.namespaced) {
      if (o.metadata.namespace !== undefined && o.metadata.namespace !== '' && o.metadata.namespace !== namespace) {
        status(res, 400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
        return false;
      }
      o.metadata.namespace = namespace;
    }
    if (name !== undefined && o.metadata.name !== undefined && o.metadata.name !== name) {
      status(res, 400, 'BadRequest', `the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`);
      return false;
    }
    if (name !== undefined) o.metadata.name = name;
    if (!o.metadata.name && o.metadata.generateName) o.metadata.name = `${o.metadata.generateName}${randomUUID().slice(0, 5)}`;
    if (!o.metadata.name) {
      invalid(res, type, '', [{ field: 'metadata.name', message: 'name or generateName is required', reason: 'FieldValueRequired' }]);
      return false;
    }
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.metadata.name) || o.metadata.name.length > 253) {
      invalid(res, type, o.metadata.name, [{ field: 'metadata.name', message: `Invalid value: "${o.metadata.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`, reason: 'FieldValueInvalid' }]);
      return false;
    }
    if (type.kind === 'Secret') {
      // As core validation (ValidateSecret): keys as ConfigMap keys, values valid base64, and at
      // most 1 MiB (core.MaxSecretSize) of decoded data in all.
      const causes: Array<{ field: string; message: string; reason: string }> = [];
      let total = 0;
      for (const [k, v] of Object.entries((o.data ?? {}) as Record<string, unknown>)) {
        if (!/^[-._a-zA-Z0-9]+$/.test(k) || k.length > 253) causes.push({ field: `data[${k}]`, message: `Invalid value: "${k}": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')`, reason: 'FieldValueInvalid' });
        if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) {
          status(res, 400, 'BadRequest', `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0`);
          return false;
        }
        total += Buffer.from(v, 'base64').length;
      }
      if (total > 1024 * 1024) causes.push({ field: 'data', message: 'Too long: must have at most 1048576 bytes', reason: 'FieldValueTooLong' });
      if (causes.length > 0) {
        invalid(res, type, o.metadata.name, causes);
        return false;
      }
    }
    o.apiVersion = av;
    o.kind = type.kind;
    delete o.metadata.managedFields;
    return true;
  }

  #createReq(c: Ctx, body: string, req: IncomingMessage): void {
    const { res, type, namespace, version } = c;
    void req;
    if (c.name !== undefined) return methodNotAllowed(res);
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const o = this.#parseBody(res, body);
    if (!o || !this.#checkBody(c, o, undefined)) return;
    const key = this.#storeKey(type, namespace, o.metadata.name);
    if (this.#store.has(key)) {
      status(res, 409, 'AlreadyExists', `${qualified(type)} "${o.metadata.name}" already exists`, { name: o.metadata.name, group: type.group, kind: type.resource });
      return;
    }
    delete o.metadata.resourceVersion;
    delete o.metadata.uid;
    delete o.status;
    if (c.url.searchParams.get('dryRun') === 'All') {
      json(res, 201, this.#served(o, type, version));
      return;
    }
    json(res, 201, this.#served(this.#create(type, o), type, version));
  }

  #replaceReq(c: Ctx, body: string): void {
    const { res, type, namespace, name, version, subresource } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const o = this.#parseBody(res, body);
    if (!o || !this.#checkBody(c, o, name)) return;
    const s = this.#store.get(this.#storeKey(type, namespace, name!));
    if (!s) return objectNotFound(res, type, name!);
    const asked = o.metadata.resourceVersion;
    if (asked !== undefined && asked !== '' && asked !== s.obj.metadata.resourceVersion) {
      status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${qualified(type)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, group: type.group, kind: type.resource });
      return;
    }
    if (subresource === 'status') {
      const next = clone(s.obj);
      next.status = o.status;
      json(res, 200, this.#served(this.#writeStatus(type, s.obj, next), type, version));
      return;
    }
    json(res, 200, this.#served(this.#update(type, s.obj, o).obj, type, version));
  }

  #writeStatus(type: ResourceType, current: KObj, next: KObj): KObj {
    if (canonical(next) === canonical(current)) return current;
    const rv = this.#nextRv();
    next.metadata.resourceVersion = String(rv);
    this.#store.set(this.#storeKey(type, type.namespaced ? next.metadata.namespace : undefined, next.metadata.name), { type, obj: next });
    this.#record({ rv, type: 'MODIFIED', typeKey: typeKeyOf(type), obj: next, prev: current });
    return next;
  }

  #patchReq(c: Ctx, body: string, contentType: string): void {
    const { res, type, namespace, name, version, subresource } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const s = this.#store.get(this.#storeKey(type, namespace, name!));
    if (!s) return objectNotFound(res, type, name!);
    const mediaType = contentType.split(';')[0]!.trim();
    let patched: KObj;
    try {
      const patch = JSON.parse(body) as unknown;
      const current = this.#served(s.obj, type, version);
      if (mediaType === 'application/json-patch+json') patched = jsonPatch(current, patch as KObj[]);
      else if (mediaType === 'application/merge-patch+json') patched = mergePatch(current, patch, false) as KObj;
      else if (mediaType === 'application/strategic-merge-patch+json') patched = mergePatch(current, patch, true) as KObj;
      else {
        status(res, 415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
        return;
      }
    } catch (err) {
      status(res, 422, 'Invalid', `the patch cannot be applied: ${(err as Error).message}`);
      return;
    }
    const asked = patched.metadata?.resourceVersion;
    if (asked !== undefined && asked !== s.obj.metadata.resourceVersion) {
      status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${qualified(type)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, group: type.group, kind: type.resource });
      return;
    }
    if (!this.#checkBody(c, patched, name)) return;
    if (subresource === 'status') {
      const next = clone(s.obj);
      next.status = patched.status;
      json(res, 200, this.#served(this.#writeStatus(type, s.obj, next), type, version));
      return;
    }
    delete patched.metadata.resourceVersion;
    json(res, 200, this.#served(this.#update(type, s.obj, patched).obj, type, version));
  }

  #deleteReq(c: Ctx): void {
    const { res, type, namespace, name, version } = c;
    if (this.#uninstalled.has(type.group)) return notFound(res);
    const key = this.#storeKey(type, namespace, name!);
    const s = this.#store.get(key);
    if (!s) return objectNotFound(res, type, name!);
    json(res, 200, this.#served(this.#delete(type, key, s.obj), type, version));
  }
}

interface Ctx {
  res: ServerResponse;
  url: URL;
  type: ResourceType;
  version: string;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

// ---- helpers ---------------------------------------------------------------------------------

function qualified(t: ResourceType): string {
  return t.group ? `${t.resource}.${t.group}` : t.resource;
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-cache, private' });
  res.end(text);
}

function statusBody(code: number, reason: string, message: string, details?: KObj): KObj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** A `Status` answer, as the API conventions define it. */
function status(res: ServerResponse, code: number, reason: string, message: string, details?: KObj): void {
  json(res, code, statusBody(code, reason, message, details));
}

function notFound(res: ServerResponse): void {
  status(res, 404, 'NotFound', 'the server could not find the requested resource', {});
}

function objectNotFound(res: ServerResponse, type: ResourceType, name: string): void {
  status(res, 404, 'NotFound', `${qualified(type)} "${name}" not found`, { name, group: type.group, kind: type.resource });
}

function methodNotAllowed(res: ServerResponse): void {
  status(res, 405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
}

function invalid(res: ServerResponse, type: ResourceType, name: string, causes: Array<{ field: string; message: string; reason: string }>): void {
  status(res, 422, 'Invalid', `${type.kind} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`, { name, group: type.group, kind: type.kind, causes });
}

function writeEvent(res: ServerResponse, type: string, object: KObj): void {
  if (res.writableEnded || res.destroyed) return;
  res.write(`${JSON.stringify({ type, object })}\n`);
}

/** Stable JSON (sorted keys) for content comparison. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) => (val && typeof val === 'object' && !Array.isArray(val) ? Object.fromEntries(Object.entries(val as KObj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : val));
}

function withoutMeta(o: KObj): KObj {
  const { metadata: _m, status: _s, ...rest } = o;
  return rest;
}

/** Kubernetes version priority: v1 > v1beta2 > v1beta1 > v1alpha1 (GA, then beta, then alpha; higher numbers first). */
export function compareKubeVersions(a: string, b: string): number {
  const rank = (v: string): [number, number, number] => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return [3, 0, 0];
    return [m[2] === undefined ? 0 : m[2] === 'beta' ? 1 : 2, -Number(m[1]), -Number(m[3] ?? 0)];
  };
  const ra = rank(a);
  const rb = rank(b);
  for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return ra[i]! - rb[i]!;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** RFC 7386 merge patch; `strategic`: Kubernetes' strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`, `$deleteFromPrimitiveList/...`) are honoured or dropped, lists replaced. */
export function mergePatch(target: unknown, patch: unknown, strategic: boolean): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const p = patch as KObj;
  if (strategic && p.$patch === 'replace') {
    const { $patch: _r, ...rest } = p;
    return mergePatch({}, rest, true);
  }
  if (strategic && p.$patch === 'delete') return undefined;
  const out: KObj = typeof target === 'object' && target !== null && !Array.isArray(target) ? clone(target as KObj) : {};
  for (const [k, v] of Object.entries(p)) {
    if (strategic && k.startsWith('$')) {
      const m = /^\$deleteFromPrimitiveList\/(.+)$/.exec(k);
      if (m && Array.isArray(out[m[1]!]) && Array.isArray(v)) out[m[1]!] = (out[m[1]!] as unknown[]).filter((x) => !(v as unknown[]).includes(x));
      continue;
    }
    if (v === null) delete out[k];
    else {
      const merged = mergePatch(out[k], v, strategic);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    }
  }
  return out;
}

/** RFC 6902 JSON patch: add, remove, replace, test, copy, move. */
export function jsonPatch(target: KObj, ops: KObj[]): KObj {
  const doc: KObj = clone(target);
  const parse = (p: string): string[] => p.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const parentOf = (path: string[]): { parent: any; key: string } => {
    let cur: any = doc;
    for (const seg of path.slice(0, -1)) {
      cur = Array.isArray(cur) ? cur[Number(seg)] : cur?.[seg];
      if (cur === undefined) throw new Error(`path ${path.join('/')} does not exist`);
    }
    return { parent: cur, key: path[path.length - 1]! };
  };
  const get = (path: string[]): unknown => path.reduce<any>((c, s) => (Array.isArray(c) ? c[Number(s)] : c?.[s]), doc);
  const put = (path: string[], value: unknown, insert: boolean): void => {
    const { parent, key } = parentOf(path);
    if (Array.isArray(parent)) {
      const i = key === '-' ? parent.length : Number(key);
      if (insert) parent.splice(i, 0, value);
      else parent[i] = value;
    } else parent[key] = value;
  };
  const del = (path: string[]): void => {
    const { parent, key } = parentOf(path);
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else if (parent && key in parent) delete parent[key];
    else throw new Error(`path /${path.join('/')} does not exist`);
  };
  for (const op of ops) {
    const path = parse(String(op.path ?? ''));
    switch (op.op) {
      case 'add':
        put(path, clone(op.value), true);
        break;
      case 'remove':
        del(path);
        break;
      case 'replace':
        if (get(path) === undefined) throw new Error(`path ${op.path} does not exist`);
        put(path, clone(op.value), false);
        break;
      case 'test':
        if (canonical(get(path)) !== canonical(op.value)) throw new Error(`test failed at ${op.path}`);
        break;
      case 'copy':
        put(path, clone(get(parse(String(op.from))) ?? null), true);
        break;
      case 'move': {
        const v = get(parse(String(op.from)));
        del(parse(String(op.from)));
        put(path, v, true);
        break;
      }
      default:
        throw new Error(`unknown JSON patch operation ${String(op.op)}`);
    }
  }
  return doc;
}

type LabelMatch = (labels: Record<string, string>) => boolean;

/** `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-separated (AND). An error message when it does not parse. */
export function parseLabelSelector(sel: string): LabelMatch | string {
  const terms: LabelMatch[] = [];
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of sel) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) parts.push(cur);
  for (const raw of parts) {
    const t = raw.trim();
    if (!t) continue;
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(t))) {
      const [, key, op, list] = m as unknown as [string, string, string, string];
      const values = list.split(',').map((v) => v.trim()).filter(Boolean);
      terms.push(op === 'in' ? (l) => key in l && values.includes(l[key]!) : (l) => !(key in l) || !values.includes(l[key]!));
    } else if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/.exec(t))) {
      const [, key, op, value] = m as unknown as [string, string, string, string];
      terms.push(op === '!=' ? (l) => l[key] !== value : (l) => l[key] === value);
    } else if ((m = /^!([\w./-]+)$/.exec(t))) {
      const key = m[1]!;
      terms.push((l) => !(key in l));
    } else if ((m = /^([\w./-]+)$/.exec(t))) {
      const key = m[1]!;
      terms.push((l) => key in l);
    } else {
      return `unable to parse requirement: found '${t}', expected: identifier`;
    }
  }
  return (l) => terms.every((f) => f(l));
}

/** `path=value`, `path==value`, `path!=value` on dotted paths (`metadata.name`, `type`, `status.phase`), comma-separated. */
export function parseFieldSelector(sel: string): ((o: KObj) => boolean) | string {
  const terms: Array<(o: KObj) => boolean> = [];
  for (const raw of sel.split(',')) {
    const t = raw.trim();
    if (!t) continue;
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(t);
    if (!m) return `invalid selector: '${t}'; can't understand '${t}'`;
    const [, path, op, value] = m as unknown as [string, string, string, string];
    const get = (o: KObj): string => {
      const v = path.split('.').reduce<any>((c, s) => c?.[s], o);
      return v === undefined || v === null ? '' : String(v);
    };
    terms.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  return (o) => terms.every((f) => f(o));
}

// ---- kubectl ---------------------------------------------------------------------------------

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real kubectl against this server: its own kubeconfig and cache folder (HOME), and
 * `--validate=false` on the commands that take it (the server has no OpenAPI document).
 */
export async function kubectl(server: KubeApiServer, args: string[], opts: { stdin?: string; kubeconfig?: string; timeoutMs?: number } = {}): Promise<KubectlResult> {
  const { spawn } = await import('node:child_process');
  const kubeconfig = opts.kubeconfig ?? server.defaultKubeconfig;
  const home = join(server.tmpDir, 'home');
  const validates = ['apply', 'create', 'replace'].includes(args[0] ?? '');
  const full = ['--kubeconfig', kubeconfig, '--cache-dir', join(home, 'cache'), ...args, ...(validates ? ['--validate=false'] : [])];
  return new Promise((resolve, reject) => {
    const p = spawn(KUBECTL, full, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    p.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    p.stdin.end(opts.stdin ?? '');
  });
}

export const KUBECTL = process.env.KUBECTL ?? '/usr/bin/kubectl';

/** kubectl, failing the test with its stderr when it exits non-zero. */
export async function kubectlOk(server: KubeApiServer, args: string[], opts: { stdin?: string; kubeconfig?: string } = {}): Promise<string> {
  const r = await kubectl(server, args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}
