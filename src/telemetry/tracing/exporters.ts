// Span export: one bounded queue per collector, flushed in batches by a timer, one export in
// flight at a time, through the OpenTelemetry project's exporters (Zipkin JSON v2, OTLP/HTTP
// protobuf, OTLP/gRPC): the wire formats are theirs, not ours. A request only appends to an array;
// a dead or slow collector costs dropped spans (counted), never request latency or memory.
import type { HrTime, SpanContext } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { Counter, type Registry } from 'prom-client';
import type { OpenTelemetryTracerConfig, TracerHeader, TracingProvider, ZipkinTracerConfig } from '../../controlplane/snapshot.js';
import { spanAttributes, type SpanRecord } from './span.js';

/** OpenTelemetry's BatchSpanProcessor defaults: queue and batch sizes. */
export const MAX_QUEUE = 2048;
export const MAX_BATCH = 512;
/** A queued span waits at most this long for its batch (Envoy's Zipkin tracer flushes every 5 s; shorter here). */
export const FLUSH_DELAY_MS = 1000;

export interface ExportMetrics {
  readonly exported: Counter<'provider'>;
  readonly dropped: Counter<'provider' | 'reason'>;
}

export function exportMetrics(registry: Registry): ExportMetrics {
  const get = (name: string): unknown => registry.getSingleMetric(name);
  return {
    exported:
      (get('gatehouse_tracing_spans_exported_total') as Counter<'provider'> | undefined) ??
      new Counter({ name: 'gatehouse_tracing_spans_exported_total', help: 'Spans a trace collector accepted, by extension provider', labelNames: ['provider'], registers: [registry] }),
    dropped:
      (get('gatehouse_tracing_spans_dropped_total') as Counter<'provider' | 'reason'> | undefined) ??
      new Counter({
        name: 'gatehouse_tracing_spans_dropped_total',
        help: 'Spans not exported: queue_full (the collector is slower than the traffic) or export_failed (the collector refused, failed or timed out)',
        labelNames: ['provider', 'reason'],
        registers: [registry],
      }),
  };
}

/** Where spans of one tracing provider go. */
export interface SpanSink {
  readonly provider: string;
  add(span: SpanRecord): void;
}

const headerValue = (h: TracerHeader): string => (h.env_name !== undefined ? (process.env[h.env_name] ?? '') : (h.value ?? ''));
const headerMap = (hs: readonly TracerHeader[]): Record<string, string> => Object.fromEntries(hs.map((h) => [h.key, headerValue(h)]));
const ms = (d: { seconds: number; nanos: number }): number => d.seconds * 1000 + Math.round(d.nanos / 1e6);

/** The exporter of a provider config, loaded on first use (the packages cost nothing when tracing is off). */
async function createExporter(p: TracingProvider, serviceName: string): Promise<{ exporter: SpanExporter; timeoutMs: number }> {
  if (p.name === 'envoy.tracers.zipkin') {
    const z = p.typed_config as ZipkinTracerConfig;
    const { ZipkinExporter } = await import('@opentelemetry/exporter-zipkin');
    const uri = z.collector_service.http_uri;
    return { exporter: new ZipkinExporter({ url: uri.uri, serviceName, headers: headerMap(z.collector_service.request_headers_to_add) }), timeoutMs: ms(uri.timeout) };
  }
  const o = p.typed_config as OpenTelemetryTracerConfig;
  if (o.http_service) {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
    const uri = o.http_service.http_uri;
    const timeoutMs = ms(uri.timeout);
    return { exporter: new OTLPTraceExporter({ url: uri.uri, headers: headerMap(o.http_service.request_headers_to_add), timeoutMillis: timeoutMs }), timeoutMs };
  }
  const g = o.grpc_service!;
  const [{ OTLPTraceExporter }, grpc] = await Promise.all([import('@opentelemetry/exporter-trace-otlp-grpc'), import('@grpc/grpc-js')]);
  const metadata = new grpc.Metadata();
  for (const h of g.initial_metadata) metadata.set(h.key, headerValue(h));
  const timeoutMs = g.timeout ? ms(g.timeout) : 5_000;
  return { exporter: new OTLPTraceExporter({ url: `http://${g.authority}`, credentials: grpc.credentials.createInsecure(), metadata, timeoutMillis: timeoutMs }), timeoutMs };
}

/** A batching queue in front of one exporter. */
export class BatchSink implements SpanSink {
  readonly provider: string;
  readonly #serviceName: string;
  readonly #create: () => Promise<{ exporter: SpanExporter; timeoutMs: number }>;
  #exporter: Promise<{ exporter: SpanExporter; timeoutMs: number } | null> | null = null;
  #queue: SpanRecord[] = [];
  #timer: NodeJS.Timeout | null = null;
  #inFlight = false;
  /** The pending timer flushes at once (a full batch waits for it). */
  #immediate = false;
  #closed = false;
  #resource: ReadableSpan['resource'] | null = null;
  // prom-client children resolved once: a labelled inc() per span would hash its labels every time.
  readonly #exported: { inc(n?: number): void };
  readonly #queueFull: { inc(n?: number): void };
  readonly #exportFailed: { inc(n?: number): void };

  constructor(provider: TracingProvider, serviceName: string, metrics: ExportMetrics, create?: () => Promise<{ exporter: SpanExporter; timeoutMs: number }>) {
    this.provider = provider.metadata.filter_metadata.istio.provider;
    this.#serviceName = serviceName;
    this.#exported = metrics.exported.labels({ provider: this.provider });
    this.#queueFull = metrics.dropped.labels({ provider: this.provider, reason: 'queue_full' });
    this.#exportFailed = metrics.dropped.labels({ provider: this.provider, reason: 'export_failed' });
    this.#create = create ?? (() => createExporter(provider, serviceName));
  }

  add(span: SpanRecord): void {
    if (this.#closed) return;
    const q = this.#queue;
    if (q.length >= MAX_QUEUE) {
      this.#queueFull.inc();
      return;
    }
    q.push(span);
    if (q.length >= MAX_BATCH) {
      if (!this.#inFlight && !this.#immediate) this.#flushSoon(0);
    } else if (this.#timer === null) this.#flushSoon(FLUSH_DELAY_MS);
  }

  #flushSoon(delay: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#immediate = delay === 0;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#immediate = false;
      void this.flush();
    }, delay);
    this.#timer.unref();
  }

  /** Exports one batch (if none is in flight); the rest is scheduled. */
  async flush(): Promise<void> {
    if (this.#inFlight || this.#queue.length === 0) return;
    this.#inFlight = true;
    const batch = this.#queue.splice(0, MAX_BATCH);
    try {
      const ok = await this.#export(batch);
      if (ok) this.#exported.inc(batch.length);
      else this.#exportFailed.inc(batch.length);
    } finally {
      this.#inFlight = false;
      if (this.#queue.length > 0 && !this.#closed) this.#flushSoon(this.#queue.length >= MAX_BATCH ? 0 : FLUSH_DELAY_MS);
    }
  }

  async #export(batch: SpanRecord[]): Promise<boolean> {
    this.#exporter ??= this.#create().catch(() => null);
    const e = await this.#exporter;
    if (e === null) return false;
    const spans = await this.#readable(batch);
    return new Promise<boolean>((resolve) => {
      // The exporters have no timeout of their own (Zipkin's): a collector that never answers fails the batch.
      const timer = setTimeout(() => resolve(false), e.timeoutMs + 1000);
      timer.unref();
      try {
        e.exporter.export(spans, (r: ExportResult) => {
          clearTimeout(timer);
          resolve(r.code === 0);
        });
      } catch {
        clearTimeout(timer);
        resolve(false);
      }
    });
  }

  async #readable(batch: SpanRecord[]): Promise<ReadableSpan[]> {
    if (this.#resource === null) {
      const { resourceFromAttributes } = await import('@opentelemetry/resources');
      this.#resource = resourceFromAttributes({ 'service.name': this.#serviceName });
    }
    const resource = this.#resource;
    return batch.map((s) => toReadable(s, resource));
  }

  /** Exports what is queued, then stops (shutdown). */
  async close(): Promise<void> {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    while (this.#queue.length > 0 && !this.#inFlight) await this.flush();
    this.#closed = true;
    const e = await (this.#exporter ?? Promise.resolve(null));
    await e?.exporter.shutdown().catch(() => undefined);
  }
}

const SCOPE = { name: 'gatehouse' };

function hr(msEpoch: number): HrTime {
  const s = Math.floor(msEpoch / 1000);
  return [s, Math.round((msEpoch - s * 1000) * 1e6)];
}

function toReadable(s: SpanRecord, resource: ReadableSpan['resource']): ReadableSpan {
  const ctx: SpanContext = { traceId: s.traceId, spanId: s.spanId, traceFlags: 1 };
  const parent: SpanContext | undefined = s.parentId ? { traceId: s.traceId, spanId: s.parentId, traceFlags: 1, isRemote: false } : undefined;
  const start = hr(s.startMs);
  const dur = Math.max(0, s.durationMs);
  return {
    name: s.name,
    kind: s.kind,
    spanContext: () => ctx,
    ...(parent ? { parentSpanContext: parent } : {}),
    startTime: start,
    endTime: hr(s.startMs + dur),
    duration: [Math.floor(dur / 1000), Math.round((dur % 1000) * 1e6)],
    // Envoy's `error` tag; OTLP also gets the status (code 2: ERROR) its consumers read.
    status: { code: s.error ? 2 : 0 },
    attributes: spanAttributes(s),
    links: [],
    events: [],
    ended: true,
    resource,
    instrumentationScope: SCOPE,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}

/**
 * The sinks of a data plane, one per distinct provider config, kept across config versions (a
 * reload that keeps the provider keeps its queue); a provider no longer used is flushed and closed.
 */
export class TraceExporters {
  readonly #metrics: ExportMetrics;
  readonly #sinks = new Map<string, BatchSink>();

  constructor(registry: Registry) {
    this.#metrics = exportMetrics(registry);
  }

  sink(provider: TracingProvider, serviceName: string): BatchSink {
    const key = `${serviceName}|${JSON.stringify(provider)}`;
    let s = this.#sinks.get(key);
    if (!s) {
      s = new BatchSink(provider, serviceName, this.#metrics);
      this.#sinks.set(key, s);
    }
    return s;
  }

  /** Closes the sinks not in `keep` (after a config change). */
  retain(keep: ReadonlySet<BatchSink>): void {
    for (const [k, s] of this.#sinks) {
      if (keep.has(s)) continue;
      this.#sinks.delete(k);
      void s.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.#sinks.values()].map((s) => s.close()));
    this.#sinks.clear();
  }
}
