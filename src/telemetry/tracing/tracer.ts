// The tracing of one config version (the snapshot's `telemetry.tracing`), compiled once, and the
// trace of one request. A gateway's listeners are Istio OUTBOUND listeners, so Envoy's span for a
// request is an egress (CLIENT) span named by the route's decorator (`host:port/path*`, else
// `egress <host>`), and with Istio's spawn_upstream_span each upstream attempt is a child CLIENT
// span `router <cluster> egress` (a mirror's `async <cluster> egress`) whose id the upstream request
// carries as its parent. Unsampled requests still carry a context upstream (sampled=0), as Envoy's.
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import type { TracingConfig, TracingCustomTag } from '../../controlplane/snapshot.js';
import type { RequestHead } from '../../routing/request.js';
import { extract, inject, W3C, type OutgoingContext } from './context.js';
import type { TraceExporters, SpanSink } from './exporters.js';
import { spanId, traceId } from './ids.js';
import { percentToTenThousandths, traceReason, NOT_TRACEABLE } from './sampler.js';
import { SPAN_KIND_CLIENT, type SpanRecord } from './span.js';

/** performance.timeOrigin is a getter into C++: read once. */
const TIME_ORIGIN = performance.timeOrigin;

/** Envoy's default max_path_tag_length. */
const DEFAULT_MAX_PATH_TAG = 256;

/** The gateway's facts Envoy takes from its bootstrap node. */
export interface NodeFacts {
  /** Envoy's node id (`router~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`). */
  readonly nodeId: string;
  /** The service name spans carry (Envoy's local cluster, `<app>.<namespace>`). */
  readonly serviceName: string;
}

export function nodeFacts(serviceName: string): NodeFacts {
  const ns = serviceName.includes('.') ? serviceName.slice(serviceName.lastIndexOf('.') + 1) : 'default';
  return { nodeId: `router~127.0.0.1~${hostname()}.${ns}~${ns}.svc.cluster.local`, serviceName };
}

/** What the data plane passes to `Tracer.compile`. */
export interface TracerOptions {
  readonly exporters: TraceExporters;
  /** `defaultConfig.gatewayTopology.numTrustedProxies`: who may send `x-envoy-force-trace`. */
  readonly trustedHops: number;
}

export class Tracer {
  readonly tenThousandths: number;
  readonly useRequestId: boolean;
  readonly propagate: boolean;
  readonly sink: SpanSink | null;
  readonly maxPathTag: number;
  readonly trustedHops: number;
  /** Tags every span of the gateway carries (node_id, literal and environment custom tags, Istio's), [name, value, ...]. */
  readonly staticTags: readonly string[];
  /** Request-header custom tags: [tag, header, default]. */
  readonly headerTags: ReadonlyArray<readonly [string, string, string | undefined]>;

  constructor(cfg: TracingConfig, node: NodeFacts, sink: SpanSink | null, trustedHops: number) {
    this.tenThousandths = percentToTenThousandths(cfg.random_sampling.value);
    this.useRequestId = cfg.use_request_id_for_trace_sampling;
    this.propagate = cfg.no_context_propagation !== true;
    this.sink = sink;
    this.maxPathTag = cfg.max_path_tag_length ?? DEFAULT_MAX_PATH_TAG;
    this.trustedHops = trustedHops;
    const tags: Record<string, string> = { node_id: node.nodeId, component: 'proxy' };
    const headerTags: Array<readonly [string, string, string | undefined]> = [];
    for (const t of cfg.custom_tags) compileTag(t, tags, headerTags);
    this.staticTags = Object.entries(tags).flat();
    this.headerTags = headerTags;
  }

  /** The tracer of a snapshot's tracing config, null when tracing is off. */
  static compile(cfg: TracingConfig | undefined, serviceName: string, opts: TracerOptions): Tracer | null {
    if (!cfg) return null;
    const name = cfg.provider?.name === 'envoy.tracers.opentelemetry' ? (cfg.provider.typed_config as { service_name?: string }).service_name || serviceName : serviceName;
    const sink = cfg.provider ? opts.exporters.sink(cfg.provider, name) : null;
    return new Tracer(cfg, nodeFacts(name), sink, opts.trustedHops);
  }

  /**
   * A request's trace: its incoming context read from `headers` (the request's headers, with
   * x-forwarded-for as the listener completed it), the sampling decided. `forceTrace`: the client
   * sent `x-envoy-force-trace` (honoured only from a trusted internal hop).
   */
  start(head: RequestHead, headers: readonly string[], peer: string, forceTrace: boolean, startedAt: number): RequestTrace {
    const incoming = extract(headers);
    let requestId = '';
    let clientTraceId = '';
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i]!;
      if (k === 'x-request-id') requestId = headers[i + 1]!;
      else if (k === 'x-client-trace-id') clientTraceId = headers[i + 1]!;
    }
    const forced = forceTrace && internalRequest(headers, this.trustedHops, peer);
    const reason = traceReason(this.tenThousandths, this.useRequestId ? requestId : undefined, clientTraceId !== '', forced);
    const t = new RequestTrace(this, head, startedAt, requestId, clientTraceId);
    t.peer = peer;
    if (incoming !== null && 'traceId' in incoming) {
      t.traceId = incoming.traceId;
      t.parentId = incoming.parentId;
      t.traceId64 = incoming.traceId64;
      t.tracestate = incoming.tracestate;
    } else {
      t.traceId = traceId();
    }
    t.formats = incoming !== null && incoming.formats !== 0 ? incoming.formats : W3C;
    t.debug = incoming?.debug ?? false;
    // An incoming decision is respected (Envoy's tracers take the parent's sampled flag).
    t.sampled = incoming?.sampled ?? reason !== NOT_TRACEABLE;
    return t;
  }
}

function compileTag(t: TracingCustomTag, tags: Record<string, string>, headerTags: Array<readonly [string, string, string | undefined]>): void {
  if (t.literal) tags[t.tag] = t.literal.value;
  else if (t.environment) {
    const v = process.env[t.environment.name] ?? t.environment.default_value;
    if (v !== undefined) tags[t.tag] = v;
  } else if (t.request_header) headerTags.push([t.tag, t.request_header.name.toLowerCase(), t.request_header.default_value]);
}

/** RFC 1918, loopback and unique-local addresses: what Envoy counts as internal by default. */
export function isInternalAddress(ip: string): boolean {
  const v = isIP(ip);
  if (v === 4) {
    const [a, b] = ip.split('.').map(Number) as [number, number];
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  }
  if (v === 6) {
    const l = ip.toLowerCase();
    if (l.startsWith('::ffff:')) return isInternalAddress(l.slice(7));
    return l === '::1' || l.startsWith('fc') || l.startsWith('fd');
  }
  return false;
}

/**
 * Envoy's internal request (use_remote_address with xff_num_trusted_hops): the client address,
 * the Nth entry from the right of x-forwarded-for (0: the peer, and only when the client sent no
 * x-forwarded-for of its own), is an internal address. Only such a request may force a trace.
 */
export function internalRequest(headers: readonly string[], hops: number, peer: string): boolean {
  let xff = '';
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'x-forwarded-for') xff = headers[i + 1]!;
  const parts = xff ? xff.split(',') : [peer];
  if (hops <= 0) return parts.length <= 1 && isInternalAddress(peer);
  const i = parts.length - 1 - hops;
  if (i < 0) return false;
  return isInternalAddress(parts[i]!.trim());
}

/** One upstream attempt's span. */
export interface UpstreamSpan {
  readonly spanId: string;
  readonly name: string;
  readonly cluster: string;
  readonly startedAt: number;
}

/** What the end of a request tells its span. */
export interface RequestOutcome {
  status: number;
  flags: string;
  /** The upstream cluster (Envoy's `upstream_cluster`), '' when none. */
  cluster: string;
  /** The route's decorator operation, '' when no route. */
  operation: string;
  requestBytes: number;
  responseBytes: number;
  protocol: string;
  /** gRPC status of the response ('' for none): a non-zero one is an error. */
  grpcStatus?: string;
}

export class RequestTrace {
  readonly tracer: Tracer;
  readonly head: RequestHead;
  /** performance.now() when the request began. */
  readonly startedAt: number;
  readonly requestId: string;
  readonly clientTraceId: string;
  traceId = '';
  /** The gateway's own span. */
  readonly spanId: string = spanId();
  /** The caller's span ('' when the gateway started the trace). */
  parentId = '';
  sampled = false;
  debug = false;
  formats = W3C;
  traceId64 = false;
  tracestate = '';
  #finished = false;

  constructor(tracer: Tracer, head: RequestHead, startedAt: number, requestId: string, clientTraceId: string) {
    this.tracer = tracer;
    this.head = head;
    this.startedAt = startedAt;
    this.requestId = requestId;
    this.clientTraceId = clientTraceId;
  }

  /**
   * Starts an upstream attempt's span and writes its context into the attempt's headers (a retry
   * overwrites what the previous attempt wrote). `mirror`: a shadow request (`async ... egress`).
   */
  upstream(headers: string[], cluster: string, mirror = false): UpstreamSpan {
    const id = spanId();
    if (this.tracer.propagate) {
      const out: OutgoingContext = { traceId: this.traceId, spanId: id, parentId: this.spanId, sampled: this.sampled, debug: this.debug, formats: this.formats, traceId64: this.traceId64 };
      inject(headers, out);
    }
    return { spanId: id, name: `${mirror ? 'async' : 'router'} ${cluster} egress`, cluster, startedAt: performance.now() };
  }

  /** An attempt ended: its response status (0: none, a reset or timeout), the upstream host, the flags. */
  endUpstream(u: UpstreamSpan, status: number, address: string, flags: string, protocol: string): void {
    const sink = this.tracer.sink;
    if (!this.sampled || sink === null) return;
    const now = performance.now();
    const tags = [
      'http.protocol', protocol,
      'upstream_address', address || '-',
      'peer.address', address || '-',
      'upstream_cluster', u.cluster,
      'upstream_cluster.name', u.cluster,
      'http.status_code', String(status),
      'response_flags', flags || '-',
    ];
    const error = status === 0 || status >= 500;
    if (error) tags.push('error', 'true');
    sink.add(this.#record(u.spanId, this.spanId, u.name, u.startedAt, now, tags, error));
  }

  /** The request ended: the gateway's span. Once. */
  finish(o: RequestOutcome): void {
    if (this.#finished) return;
    this.#finished = true;
    const sink = this.tracer.sink;
    if (!this.sampled || sink === null) return;
    const now = performance.now();
    const head = this.head;
    const t = this.tracer;
    let url = `${head.scheme}://${head.authority}${head.path}${head.query ? `?${head.query}` : ''}`;
    if (url.length > t.maxPathTag) url = url.slice(0, t.maxPathTag);
    let userAgent = '-';
    for (let i = 0; i < head.headers.length; i += 2) if (head.headers[i] === 'user-agent') userAgent = head.headers[i + 1]!;
    const tags = [
      'guid:x-request-id', this.requestId,
      'http.url', url,
      'http.method', head.method,
      'downstream_cluster', '-',
      'user_agent', userAgent,
      'http.protocol', o.protocol,
      'peer.address', this.peer,
      'request_size', String(o.requestBytes),
      'upstream_cluster', o.cluster || '-',
      'upstream_cluster.name', o.cluster || '-',
      'http.status_code', String(o.status),
      'response_size', String(o.responseBytes),
      'response_flags', o.flags || '-',
    ];
    if (this.clientTraceId) tags.push('guid:x-client-trace-id', this.clientTraceId);
    const hts = t.headerTags;
    for (let j = 0; j < hts.length; j++) {
      const [tag, name, dflt] = hts[j]!;
      let v: string | undefined;
      for (let i = 0; i < head.headers.length; i += 2) if (head.headers[i] === name) v = head.headers[i + 1];
      v ??= dflt;
      if (v !== undefined) tags.push(tag, v);
    }
    const error = o.status === 0 || o.status >= 500 || (o.grpcStatus !== undefined && o.grpcStatus !== '' && o.grpcStatus !== '0');
    if (error) tags.push('error', 'true');
    const name = o.operation || `egress ${head.authority}`;
    sink.add(this.#record(this.spanId, this.parentId, name, this.startedAt, now, tags, error));
  }

  /** The downstream peer's address (Envoy's `peer.address`); set by the lifecycle. */
  peer = '';

  #record(id: string, parent: string, name: string, start: number, end: number, tags: string[], error: boolean): SpanRecord {
    return {
      traceId: this.traceId,
      spanId: id,
      parentId: parent,
      name,
      kind: SPAN_KIND_CLIENT,
      startMs: TIME_ORIGIN + start,
      durationMs: end - start,
      staticTags: this.tracer.staticTags,
      tags,
      error,
    };
  }
}
