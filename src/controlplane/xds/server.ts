// Envoy ADS (Aggregated Discovery Service) server, xDS v3: StreamAggregatedResources (state of the
// world) and DeltaAggregatedResources (incremental). It serves opaque resource bytes taken from
// per-client views (see view.ts), tracks subscriptions and ACK/NACK per stream and type, and on
// push() re-computes every client's view (debounced) and sends only what changed.
//
// grpc-js is imported when the first client connects, not to listen: the port is a node:net
// server from the start (connections held paused), whose sockets are handed to a grpc-js server
// (its connection injector) once loaded. A gateway no xDS client talks to never loads grpc-js.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
// pino's type, not telemetry/log.ts: the control plane sits below telemetry (test/unit/architecture.test.ts).
import type { Logger } from 'pino';
import { XdsMetrics } from './monitoring.js';
import { adsServiceClient, isResourceType, lazyAdsDefinition, shortTypeName } from './protos.js';
import type { ClientInfo, ClientKind, ViewSource, XdsView } from './view.js';

export type { ClientInfo, ClientKind, ViewSource, XdsView } from './view.js';

// ---------------------------------------------------------------------------------------------
// Service definition (protos.ts loads the Envoy protos shipped by @grpc/grpc-js-xds).

/** The AggregatedDiscoveryService definition. Clients: grpc.makeGenericClientConstructor(loadAds(), 'ADS'). */
export function loadAds(): grpc.ServiceDefinition {
  return adsServiceClient().service;
}

/**
 * Istio's debug type on the xDS port (what `istioctl proxy-status` asks istiod for): answered
 * with one google.protobuf.StringValue holding the JSON of syncz(), and not tracked.
 */
export const SYNCZ_TYPE = 'istio.io/debug/syncz';
export const STRING_VALUE_TYPE = 'type.googleapis.com/google.protobuf.StringValue';

/** google.protobuf.StringValue { value = 1 }, encoded by hand (one length-delimited field). */
export function encodeStringValue(text: string): Uint8Array {
  const body = Buffer.from(text, 'utf8');
  const len: number[] = [];
  let n = body.length;
  while (n >= 0x80) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Buffer.from([0x0a, ...len]), body]);
}

// ---------------------------------------------------------------------------------------------
// Wire shapes, as decoded/encoded by proto-loader with keepCase + defaults + oneofs.

export interface AnyMsg {
  type_url: string;
  value: Uint8Array;
}
export interface StatusMsg {
  code?: number;
  message?: string;
}
/** google.protobuf.Value. protobufjs serves the google.protobuf well-known types from its own
 * bundled definitions, whose fields are camelCase whatever keepCase says; accept both spellings. */
type StructValueMsg = { kind?: string } & Record<string, unknown>;
export interface StructMsg {
  fields?: Record<string, StructValueMsg>;
}
export interface NodeMsg {
  id?: string;
  cluster?: string;
  metadata?: StructMsg | null;
  user_agent_name?: string;
}
export interface DiscoveryRequest {
  version_info?: string;
  node?: NodeMsg | null;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: StatusMsg | null;
}
export interface DiscoveryResponse {
  version_info: string;
  resources: AnyMsg[];
  type_url: string;
  nonce: string;
}
export interface DeltaDiscoveryRequest {
  node?: NodeMsg | null;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: StatusMsg | null;
}
export interface DeltaResource {
  name: string;
  version: string;
  resource: AnyMsg;
}
export interface DeltaDiscoveryResponse {
  system_version_info: string;
  resources: DeltaResource[];
  type_url: string;
  removed_resources: string[];
  nonce: string;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const hashCache = new WeakMap<Uint8Array, string>();
/** Short content hash of a resource's bytes (the delta per-resource version), cached per buffer. */
export function resourceHash(bytes: Uint8Array): string {
  let h = hashCache.get(bytes);
  if (h === undefined) {
    h = createHash('sha256').update(bytes).digest('hex').slice(0, 16);
    hashCache.set(bytes, h);
  }
  return h;
}

function valueToJs(v: StructValueMsg | null | undefined): unknown {
  if (!v) return null;
  const kind = v.kind ?? Object.keys(v).find((k) => k !== 'kind' && v[k] !== undefined && v[k] !== null);
  if (!kind) return null;
  const x = v[kind];
  switch (kind) {
    case 'numberValue':
    case 'number_value':
    case 'stringValue':
    case 'string_value':
    case 'boolValue':
    case 'bool_value':
      return x;
    case 'structValue':
    case 'struct_value':
      return structToJs(x as StructMsg | null);
    case 'listValue':
    case 'list_value':
      return ((x as { values?: StructValueMsg[] } | null)?.values ?? []).map(valueToJs);
    default:
      return null;
  }
}
function structToJs(s: StructMsg | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = valueToJs(v);
  return out;
}

/** ClientInfo from a Node. Explicit metadata GENERATOR wins over the user agent. */
export function clientInfo(node: NodeMsg): ClientInfo {
  const metadata = structToJs(node.metadata);
  const userAgent = node.user_agent_name ?? '';
  const gen = metadata['GENERATOR'];
  let kind: ClientKind;
  if (gen === 'grpc') kind = 'proxyless';
  else if (gen === 'gatehouse') kind = 'gatehouse';
  else if (userAgent.startsWith('gRPC')) kind = 'proxyless';
  else kind = 'envoy';
  return { id: node.id ?? '', kind, metadata, userAgent };
}

/** The ISTIO_VERSION a client's node metadata gives (Envoy sidecars send it), '' when none: pilot_xds's label. */
function istioVersion(info: ClientInfo): string {
  const v = info.metadata['ISTIO_VERSION'];
  return typeof v === 'string' ? v : '';
}

class StreamError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-stream state.

type TypeStatus = 'SYNCED' | 'STALE' | 'NOT SENT';
export interface TypeSyncz {
  sent: string | null;
  acked: string | null;
  nacked?: { version: string; message: string };
  status: TypeStatus;
}
export interface ClientSyncz {
  id: string;
  kind: ClientKind;
  connectedAt: string;
  stream: 'sotw' | 'delta';
  types: Record<string, TypeSyncz>;
}
export interface Syncz {
  version: string | null;
  clients: ClientSyncz[];
}

/** ACK bookkeeping shared by both protocol variants. */
interface Track {
  /** Latest nonce sent for this type; requests carrying any other non-empty nonce are stale. */
  nonce: string | null;
  sentVersion: string | null;
  acked: string | null;
  ackedNonce: string | null;
  nacked?: { version: string; message: string };
}

interface SotwType extends Track {
  wildcard: boolean;
  names: Set<string>;
  /** Has the client ever sent a non-empty resource_names for this type (ends legacy wildcard)? */
  explicitEver: boolean;
  /** Digest of (name, hash) of the subscribed resources last sent. */
  sentDigest: string | null;
}

interface DeltaType extends Track {
  /** Explicitly subscribed to '*'. */
  star: boolean;
  /** Ever sent a non-empty subscribe/unsubscribe list (ends the legacy implicit wildcard). */
  explicitEver: boolean;
  names: Set<string>;
  /** What the client holds: name → version, or '' = told (via removed_resources) it does not exist. */
  held: Map<string, string>;
}

type Call<Req, Res> = grpc.ServerDuplexStream<Req, Res>;

interface Ctx {
  log: Logger;
  source: ViewSource;
  /** istiod's metrics, when the server has a registry. */
  metrics: XdsMetrics | null;
  nonce(): string;
  forget(conn: Conn): void;
  /** The JSON of syncz(), for SYNCZ_TYPE requests. */
  syncz(): string;
}

abstract class Conn {
  readonly connectedAt = new Date();
  view: XdsView;
  closed = false;
  readonly #unknownLogged = new Set<string>();

  constructor(
    readonly streamId: number,
    readonly info: ClientInfo,
    protected readonly ctx: Ctx,
  ) {
    this.view = ctx.source.view(info);
  }

  abstract readonly kind: 'sotw' | 'delta';
  protected abstract readonly call: Call<unknown, unknown>;
  protected abstract tracks(): Iterable<[string, Track]>;
  /** Sends what changed since the last response, per subscribed type. */
  protected abstract sendChanges(): void;

  /** Responses written since the last refresh (for the convergence time). */
  sent = 0;

  /** Re-computes this client's view; sends what changed. True when something was sent. */
  refresh(): boolean {
    if (this.closed) return false;
    const next = this.ctx.source.view(this.info);
    if (next === this.view) return false;
    this.view = next;
    this.sent = 0;
    this.sendChanges();
    return this.sent > 0;
  }

  /** One response of a type written: counted, sized and timed (from `started`, a performance.now()). */
  protected pushed(typeUrl: string, resources: ReadonlyArray<{ value: Uint8Array } | { resource: { value: Uint8Array } }>, started: number): void {
    this.sent++;
    const m = this.ctx.metrics;
    if (!m) return;
    let bytes = 0;
    for (const r of resources) bytes += 'value' in r ? r.value.byteLength : r.resource.value.byteLength;
    m.pushed(typeUrl, bytes, (performance.now() - started) / 1000);
  }

  /** Known types are the five xDS types plus whatever the client's view carries. */
  protected knownType(typeUrl: string): boolean {
    if (isResourceType(typeUrl) || this.view.resources.has(typeUrl)) return true;
    if (!this.#unknownLogged.has(typeUrl)) {
      this.#unknownLogged.add(typeUrl);
      this.ctx.log.warn({ node: this.info.id, typeUrl, stream: this.kind }, 'xds: ignoring request for unknown type URL');
    }
    return false;
  }

  /** ACK/NACK by nonce; returns false for a stale nonce (to be ignored). */
  protected ackOrNack(typeUrl: string, t: Track, nonce: string, versionInfo: string | undefined, err: StatusMsg | null | undefined): boolean {
    if (!nonce || t.nonce === null) return true; // initial request (or reconnect): nothing to (N)ACK
    if (nonce !== t.nonce) {
      this.ctx.log.debug({ node: this.info.id, type: shortTypeName(typeUrl), nonce, latest: t.nonce }, 'xds: stale nonce ignored');
      this.ctx.metrics?.expiredNonce(typeUrl);
      return false;
    }
    if (err) {
      const message = err.message ?? '';
      this.ctx.metrics?.rejected(typeUrl, this.info.id, err.code);
      t.nacked = { version: t.sentVersion ?? '', message };
      this.ctx.log.warn(
        { node: this.info.id, type: shortTypeName(typeUrl), version: t.sentVersion, clientVersion: versionInfo ?? null, code: err.code, message },
        'xds: NACK',
      );
    } else {
      t.acked = versionInfo || t.sentVersion;
      t.ackedNonce = nonce;
      t.nacked = undefined;
    }
    return true;
  }

  protected write(msg: unknown): void {
    if (this.closed || !this.call.writable) return;
    this.call.write(msg);
  }

  /** Forgets the stream and finishes it: with OK, or with the given error status. */
  end(status?: { code: grpc.status; details: string }): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.forget(this);
    if (status) this.call.emit('error', status);
    else if (this.call.writable) this.call.end();
  }

  syncz(): ClientSyncz {
    const types: Record<string, TypeSyncz> = {};
    for (const [typeUrl, t] of this.tracks()) {
      const status: TypeStatus = t.nonce === null ? 'NOT SENT' : t.ackedNonce === t.nonce ? 'SYNCED' : 'STALE';
      types[shortTypeName(typeUrl)] = {
        sent: t.sentVersion,
        acked: t.acked,
        ...(t.nacked ? { nacked: { ...t.nacked } } : {}),
        status,
      };
    }
    return { id: this.info.id, kind: this.info.kind, connectedAt: this.connectedAt.toISOString(), stream: this.kind, types };
  }
}

function emptyTrack(): Track {
  return { nonce: null, sentVersion: null, acked: null, ackedNonce: null };
}

class SotwConn extends Conn {
  readonly kind = 'sotw' as const;
  readonly #types = new Map<string, SotwType>();

  constructor(
    streamId: number,
    info: ClientInfo,
    ctx: Ctx,
    protected readonly call: Call<DiscoveryRequest, DiscoveryResponse>,
  ) {
    super(streamId, info, ctx);
  }

  protected tracks(): Iterable<[string, Track]> {
    return this.#types;
  }

  handle(req: DiscoveryRequest): void {
    const typeUrl = req.type_url ?? '';
    if (!typeUrl) throw new StreamError(G.status.INVALID_ARGUMENT, 'DiscoveryRequest.type_url is required on ADS');
    if (typeUrl === SYNCZ_TYPE) {
      this.write({ version_info: this.view.version, resources: [{ type_url: STRING_VALUE_TYPE, value: encodeStringValue(this.ctx.syncz()) }], type_url: typeUrl, nonce: this.ctx.nonce() } satisfies DiscoveryResponse);
      return;
    }
    if (!this.knownType(typeUrl)) return;
    let t = this.#types.get(typeUrl);
    const first = !t;
    if (!t) {
      t = { ...emptyTrack(), wildcard: false, names: new Set(), explicitEver: false, sentDigest: null };
      this.#types.set(typeUrl, t);
    }
    if (!this.ackOrNack(typeUrl, t, req.response_nonce ?? '', req.version_info, req.error_detail)) return;

    const requested = req.resource_names ?? [];
    if (requested.length > 0) t.explicitEver = true;
    const wildcard = requested.includes('*') || (requested.length === 0 && !t.explicitEver);
    const names = new Set(requested.filter((n) => n !== '*'));
    const changed = wildcard !== t.wildcard || names.size !== t.names.size || [...names].some((n) => !t.names.has(n));
    t.wildcard = wildcard;
    t.names = names;
    if (first || changed) this.#send(typeUrl, t);
  }

  protected sendChanges(): void {
    for (const [typeUrl, t] of this.#types) {
      if (t.nonce === null) continue; // never sent: its request was never answered (cannot happen)
      const selected = this.#select(typeUrl, t);
      if (selectionDigest(selected) !== t.sentDigest) this.#send(typeUrl, t, selected);
    }
  }

  #select(typeUrl: string, t: SotwType): [string, Uint8Array][] {
    const all = this.view.resources.get(typeUrl);
    if (!all) return [];
    // Wildcard subscribers of one view share one sorted selection (and its digest).
    if (t.wildcard) return wildcardSelection(this.view, typeUrl, all);
    const out: [string, Uint8Array][] = [];
    if (t.wildcard) for (const e of all) out.push(e);
    else
      for (const n of t.names) {
        const b = all.get(n);
        if (b) out.push([n, b]);
      }
    out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return out;
  }

  #send(typeUrl: string, t: SotwType, selected?: [string, Uint8Array][]): void {
    const started = performance.now();
    selected ??= this.#select(typeUrl, t);
    const nonce = this.ctx.nonce();
    t.nonce = nonce;
    t.sentVersion = this.view.version;
    t.sentDigest = selectionDigest(selected);
    this.ctx.log.debug({ node: this.info.id, type: shortTypeName(typeUrl), version: t.sentVersion, nonce, count: selected.length }, 'xds: push');
    const resources = selected.map(([, value]) => ({ type_url: typeUrl, value }));
    this.write({
      version_info: this.view.version,
      resources,
      type_url: typeUrl,
      nonce,
    } satisfies DiscoveryResponse);
    this.pushed(typeUrl, resources, started);
  }
}

/** Per view and type: the whole sorted resource list, for wildcard subscribers. */
const wildcardCache = new WeakMap<XdsView, Map<string, [string, Uint8Array][]>>();
function wildcardSelection(view: XdsView, typeUrl: string, all: ReadonlyMap<string, Uint8Array>): [string, Uint8Array][] {
  let byType = wildcardCache.get(view);
  if (!byType) wildcardCache.set(view, (byType = new Map()));
  let sel = byType.get(typeUrl);
  if (!sel) {
    sel = [...all].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    byType.set(typeUrl, sel);
  }
  return sel;
}

/** A selection's digest, computed once per selection array (shared ones are hashed once). */
const digestCache = new WeakMap<[string, Uint8Array][], string>();
function selectionDigest(selected: [string, Uint8Array][]): string {
  let d = digestCache.get(selected);
  if (d === undefined) digestCache.set(selected, (d = digest(selected)));
  return d;
}

function digest(selected: [string, Uint8Array][]): string {
  const h = createHash('sha1');
  for (const [n, b] of selected) h.update(`${n}\0${resourceHash(b)}\n`);
  return h.digest('base64');
}

/** xDS: a type never explicitly subscribed to (legacy) or subscribed to '*' is a wildcard subscription. */
const wildcardOf = (t: DeltaType): boolean => t.star || !t.explicitEver;

class DeltaConn extends Conn {
  readonly kind = 'delta' as const;
  readonly #types = new Map<string, DeltaType>();

  constructor(
    streamId: number,
    info: ClientInfo,
    ctx: Ctx,
    protected readonly call: Call<DeltaDiscoveryRequest, DeltaDiscoveryResponse>,
  ) {
    super(streamId, info, ctx);
  }

  protected tracks(): Iterable<[string, Track]> {
    return this.#types;
  }

  handle(req: DeltaDiscoveryRequest): void {
    const typeUrl = req.type_url ?? '';
    if (!typeUrl) throw new StreamError(G.status.INVALID_ARGUMENT, 'DeltaDiscoveryRequest.type_url is required on ADS');
    if (!this.knownType(typeUrl)) return;
    let t = this.#types.get(typeUrl);
    const first = !t;
    if (!t) {
      t = { ...emptyTrack(), star: false, explicitEver: false, names: new Set(), held: new Map() };
      this.#types.set(typeUrl, t);
    }
    // Stale nonces only void the (N)ACK: subscription changes are deltas and must never be lost.
    this.ackOrNack(typeUrl, t, req.response_nonce ?? '', t.sentVersion ?? undefined, req.error_detail);

    const sub = req.resource_names_subscribe ?? [];
    const unsub = req.resource_names_unsubscribe ?? [];
    const wasWildcard = wildcardOf(t);
    for (const n of sub) {
      t.explicitEver = true; // ends the legacy (implicit) wildcard
      if (n === '*') t.star = true;
      else t.names.add(n);
    }
    for (const n of unsub) {
      t.explicitEver = true;
      if (n === '*') t.star = false;
      else {
        t.names.delete(n);
        // The client drops it; if a wildcard still covers it, it is sent again (Envoy expects that).
        t.held.delete(n);
      }
    }
    if (wasWildcard && !wildcardOf(t)) for (const n of [...t.held.keys()]) if (!t.names.has(n)) t.held.delete(n);
    if (first) {
      const wildcard = wildcardOf(t);
      for (const [n, v] of Object.entries(req.initial_resource_versions ?? {})) if (wildcard || t.names.has(n)) t.held.set(n, v);
    }
    const changed = first || sub.length > 0 || unsub.length > 0;
    if (changed) this.#sendDiff(typeUrl, t, first);
  }

  protected sendChanges(): void {
    for (const [typeUrl, t] of this.#types) this.#sendDiff(typeUrl, t, false);
  }

  #sendDiff(typeUrl: string, t: DeltaType, force: boolean): void {
    const started = performance.now();
    const all = this.view.resources.get(typeUrl) ?? new Map<string, Uint8Array>();
    const resources: DeltaResource[] = [];
    const removed: string[] = [];
    const target = wildcardOf(t) ? all.keys() : [...t.names].filter((n) => all.has(n));
    const wanted = new Set<string>();
    for (const name of target) {
      wanted.add(name);
      const bytes = all.get(name)!;
      const version = resourceHash(bytes);
      if (t.held.get(name) !== version) {
        resources.push({ name, version, resource: { type_url: typeUrl, value: bytes } });
        t.held.set(name, version);
      }
    }
    for (const [name, version] of t.held) {
      if (wanted.has(name)) continue;
      if (t.names.has(name)) {
        if (version !== '') {
          removed.push(name);
          t.held.set(name, '');
        }
      } else {
        if (version !== '') removed.push(name);
        t.held.delete(name);
      }
    }
    // Explicitly subscribed names that do not exist and the client was never told about.
    for (const name of t.names)
      if (!wanted.has(name) && !t.held.has(name)) {
        removed.push(name);
        t.held.set(name, '');
      }
    if (!force && resources.length === 0 && removed.length === 0) return;
    const nonce = this.ctx.nonce();
    t.nonce = nonce;
    t.sentVersion = this.view.version;
    this.ctx.log.debug(
      { node: this.info.id, type: shortTypeName(typeUrl), version: t.sentVersion, nonce, count: resources.length, removed: removed.length },
      'xds: delta push',
    );
    this.write({
      system_version_info: this.view.version,
      resources,
      type_url: typeUrl,
      removed_resources: removed,
      nonce,
    } satisfies DeltaDiscoveryResponse);
    this.pushed(typeUrl, resources, started);
  }
}

// ---------------------------------------------------------------------------------------------

export interface XdsServerOptions {
  log: Logger;
  /** push() coalescing window, ms (default 100). */
  debounceMs?: number;
  /** close(): how long to wait for a graceful shutdown before forcing it, ms (default 1000). */
  shutdownGraceMs?: number;
  /** Where istiod's metrics (pilot_xds, pilot_xds_pushes, ...) are registered (the admin port's). */
  registry?: Registry;
}

/** grpc-js, set when the first client connects (before any handler below can run). */
let G: typeof grpc;

interface GrpcSide {
  server: grpc.Server;
  injector: grpc.ConnectionInjector;
}

export class XdsServer {
  readonly #source: ViewSource;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #graceMs: number;
  readonly #conns = new Map<number, Conn>();
  readonly #noncePrefix = randomBytes(3).toString('hex');
  #nonceSeq = 0;
  #streamSeq = 0;
  /** The listening socket (node:net), open from listen() on. */
  #listener: NetServer | undefined;
  /** The grpc-js server the accepted connections are injected into, made on the first one. */
  #grpc: Promise<GrpcSide> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closing = false;
  readonly #metrics: XdsMetrics | null;
  /** When the first change of the pending push happened (performance.now()), for the convergence time. */
  #pushStarted: number | null = null;

  constructor(source: ViewSource, opts: XdsServerOptions) {
    this.#source = source;
    this.#log = opts.log;
    this.#metrics = opts.registry ? new XdsMetrics(opts.registry) : null;
    this.#debounceMs = Math.max(0, opts.debounceMs ?? 100);
    this.#graceMs = Math.max(0, opts.shutdownGraceMs ?? 1000);
  }

  /** Binds an insecure gRPC listener; resolves to the bound port (port 0 = ephemeral). */
  async listen(bind: string, port: number): Promise<number> {
    if (this.#listener) throw new Error('xds: already listening');
    // Paused: nothing is read before grpc-js's HTTP/2 session takes the socket over.
    const listener = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(socket));
    this.#listener = listener;
    const host = bind.startsWith('[') && bind.endsWith(']') ? bind.slice(1, -1) : bind;
    let bound: number;
    try {
      bound = await new Promise<number>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen({ host, port }, () => {
          listener.off('error', reject);
          resolve((listener.address() as AddressInfo).port);
        });
      });
    } catch (err) {
      this.#listener = undefined;
      listener.close();
      throw err;
    }
    listener.on('error', (err) => this.#log.error({ err: err.message }, 'xds: listener error'));
    this.#log.info({ bind, port: bound }, 'xds: ADS server listening');
    return bound;
  }

  /**
   * Config changed: re-compute every client's view after the debounce window and send what
   * changed. `reason` is Istio's push trigger (config, secret, ...).
   */
  push(reason = 'config'): void {
    if (this.#closing) return;
    this.#metrics?.triggered(reason);
    this.#pushStarted ??= performance.now();
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, this.#debounceMs);
  }

  #flush(): void {
    const started = this.#pushStarted ?? performance.now();
    this.#pushStarted = null;
    for (const conn of [...this.#conns.values()]) {
      try {
        // Istio's convergence time: from the change to a client having been sent all it changed.
        if (conn.refresh()) this.#metrics?.converged((performance.now() - started) / 1000);
      } catch (err) {
        this.#log.error({ err, node: conn.info.id }, 'xds: computing view failed; keeping the previous one');
      }
    }
  }

  /** A client connection: to the grpc-js server, made (and grpc-js imported) for the first one. */
  #accept(socket: Socket): void {
    socket.on('error', () => undefined); // until grpc-js owns it (a reset while it loads)
    if (this.#closing) {
      socket.destroy();
      return;
    }
    (this.#grpc ??= this.#startGrpc()).then(
      ({ injector }) => {
        if (this.#closing || socket.destroyed) socket.destroy();
        else {
          injector.injectConnection(socket);
          socket.resume(); // held paused while grpc-js loaded; its HTTP/2 session reads it now
        }
      },
      (err: unknown) => {
        this.#log.error({ err: (err as Error).message }, 'xds: the gRPC server cannot start');
        this.#grpc = undefined;
        socket.destroy();
      },
    );
  }

  async #startGrpc(): Promise<GrpcSide> {
    G = await import('@grpc/grpc-js');
    const server = new G.Server({
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
    });
    // The Envoy protos load when the first client's first message arrives.
    server.addService(lazyAdsDefinition(), {
      StreamAggregatedResources: (call: Call<DiscoveryRequest, DiscoveryResponse>) => this.#sotw(call),
      DeltaAggregatedResources: (call: Call<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => this.#delta(call),
    });
    return { server, injector: server.createConnectionInjector(G.ServerCredentials.createInsecure()) };
  }

  async close(): Promise<void> {
    this.#closing = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const conn of [...this.#conns.values()]) conn.end();
    this.#conns.clear();
    const listener = this.#listener;
    this.#listener = undefined;
    listener?.close();
    const pending = this.#grpc;
    this.#grpc = undefined;
    if (!pending) return;
    let side: GrpcSide;
    try {
      side = await pending;
    } catch {
      return;
    }
    const { server, injector } = side;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, this.#graceMs);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    injector.destroy();
  }

  syncz(): Syncz {
    let version: string | null = this.#source.version?.() ?? null;
    const clients: ClientSyncz[] = [];
    for (const conn of this.#conns.values()) {
      const c = conn.syncz();
      // A debug client (proxy-status) subscribes to nothing: not a proxy to list.
      if (Object.keys(c.types).length === 0) continue;
      clients.push(c);
      version ??= conn.view.version;
    }
    return { version, clients };
  }

  get clientCount(): number {
    return this.#conns.size;
  }

  #ctx(): Ctx {
    return {
      log: this.#log,
      source: this.#source,
      metrics: this.#metrics,
      nonce: () => `${this.#noncePrefix}-${(++this.#nonceSeq).toString(36)}`,
      syncz: () => JSON.stringify(this.syncz()),
      forget: (conn) => {
        if (this.#conns.get(conn.streamId) === conn) {
          this.#conns.delete(conn.streamId);
          this.#metrics?.connected(istioVersion(conn.info), conn.info.kind, -1);
          this.#log.info(
            { node: conn.info.id, kind: conn.info.kind, stream: conn.kind, clients: this.#conns.size },
            'xds: client disconnected',
          );
        }
      },
    };
  }

  #sotw(call: Call<DiscoveryRequest, DiscoveryResponse>): void {
    this.#serve(call, 'sotw', (id, info) => new SotwConn(id, info, this.#ctx(), call), (conn, req) => (conn as SotwConn).handle(req));
  }

  #delta(call: Call<DeltaDiscoveryRequest, DeltaDiscoveryResponse>): void {
    this.#serve(call, 'delta', (id, info) => new DeltaConn(id, info, this.#ctx(), call), (conn, req) => (conn as DeltaConn).handle(req));
  }

  #serve<Req extends { node?: NodeMsg | null }>(
    call: Call<Req, unknown>,
    kind: 'sotw' | 'delta',
    make: (id: number, info: ClientInfo) => Conn,
    handle: (conn: Conn, req: Req) => void,
  ): void {
    if (this.#closing) {
      call.emit('error', { code: G.status.UNAVAILABLE, details: 'xds: server shutting down' });
      return;
    }
    const streamId = ++this.#streamSeq;
    let conn: Conn | undefined;
    let done = false;
    const fail = (code: grpc.status, details: string): void => {
      if (done) return;
      done = true;
      if (conn) conn.end({ code, details });
      else call.emit('error', { code, details });
    };
    const cleanup = (): void => {
      done = true;
      conn?.end();
    };
    call.on('data', (req: Req) => {
      if (done) return;
      try {
        if (!conn) {
          const node = req.node;
          if (!node) throw new StreamError(G.status.INVALID_ARGUMENT, 'xds: the first request on a stream must carry node');
          if (!node.id) throw new StreamError(G.status.INVALID_ARGUMENT, 'xds: node.id is required');
          const info = clientInfo(node);
          conn = make(streamId, info);
          this.#conns.set(streamId, conn);
          this.#metrics?.connected(istioVersion(info), info.kind, 1);
          this.#log.info(
            { node: info.id, kind: info.kind, userAgent: info.userAgent, stream: kind, peer: call.getPeer(), clients: this.#conns.size },
            'xds: client connected',
          );
        }
        handle(conn, req);
      } catch (err) {
        if (err instanceof StreamError) {
          this.#log.warn({ node: conn?.info.id ?? req.node?.id ?? null, stream: kind, err: err.message }, 'xds: rejecting stream');
          fail(err.code, err.message);
        } else {
          this.#log.error({ err, node: conn?.info.id ?? null, stream: kind }, 'xds: internal error handling request');
          this.#metrics?.internalError();
          fail(G.status.INTERNAL, 'xds: internal error');
        }
      }
    });
    call.on('end', cleanup); // client half-closed: finish our side too
    call.on('cancelled', cleanup);
    call.on('close', cleanup);
    call.on('error', (err: Error) => {
      this.#log.debug({ err: err.message, node: conn?.info.id ?? null }, 'xds: stream error');
      cleanup();
    });
  }
}
