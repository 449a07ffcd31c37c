// Trace context as Envoy reads and writes it (W3C, B3 multi and single), its sampling decision,
// and span export through the OpenTelemetry exporters to collectors that decode what arrives with
// the OpenTelemetry protos (OTLP/HTTP, OTLP/gRPC) and Zipkin's JSON v2.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import type { TracingConfig, TracingProvider } from '../../src/controlplane/snapshot.js';
import { extract, inject, B3_MULTI, B3_SINGLE, W3C } from '../../src/telemetry/tracing/context.js';
import { BatchSink, exportMetrics, MAX_QUEUE, TraceExporters } from '../../src/telemetry/tracing/exporters.js';
import { CLIENT_FORCED, FORCED, NOT_TRACEABLE, SAMPLED, traceReason } from '../../src/telemetry/tracing/sampler.js';
import { internalRequest, Tracer } from '../../src/telemetry/tracing/tracer.js';
import { spanAttributes, type SpanRecord } from '../../src/telemetry/tracing/span.js';
import type { RequestHead } from '../../src/routing/request.js';
import { startOtlpGrpcCollector, startOtlpHttpCollector, startZipkinCollector, type Collector } from '../helpers/trace-collectors.js';
import { waitFor } from '../helpers/net.js';

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const S = '00f067aa0ba902b7';

describe('trace context', () => {
  it('reads a W3C traceparent with its sampled flag and tracestate', () => {
    const c = extract(['traceparent', `00-${T}-${S}-01`, 'tracestate', 'a=1', 'tracestate', 'b=2']);
    expect(c).toMatchObject({ traceId: T, parentId: S, sampled: true, tracestate: 'a=1,b=2', formats: W3C });
    expect(extract(['traceparent', `00-${T}-${S}-00`])).toMatchObject({ sampled: false });
  });

  it('refuses malformed traceparents (bad version, zero ids, upper case, wrong length)', () => {
    for (const v of [`ff-${T}-${S}-01`, `00-${'0'.repeat(32)}-${S}-01`, `00-${T}-${'0'.repeat(16)}-01`, `00-${T.toUpperCase()}-${S}-01`, `00-${T}-${S}-01-extra`, `00-${T}-${S}`]) {
      expect(extract(['traceparent', v]), v).toBeNull();
    }
    // A later version may append fields.
    expect(extract(['traceparent', `01-${T}-${S}-01-future`])).toMatchObject({ traceId: T });
  });

  it('reads B3 multi-header, 64-bit trace ids, x-b3-flags debug, and a decision alone', () => {
    expect(extract(['x-b3-traceid', T, 'x-b3-spanid', S, 'x-b3-sampled', '1'])).toMatchObject({ traceId: T, parentId: S, sampled: true, formats: B3_MULTI });
    expect(extract(['x-b3-traceid', 'a3ce929d0e0e4736', 'x-b3-spanid', S])).toMatchObject({ traceId: `0000000000000000a3ce929d0e0e4736`, traceId64: true, sampled: undefined });
    expect(extract(['x-b3-traceid', T, 'x-b3-spanid', S, 'x-b3-flags', '1'])).toMatchObject({ sampled: true, debug: true });
    expect(extract(['x-b3-sampled', '0'])).toEqual({ sampled: false, debug: false, formats: B3_MULTI });
  });

  it('reads B3 single, with and without sampling and parent', () => {
    expect(extract(['b3', `${T}-${S}-1-05e3ac9a4f6e3b90`])).toMatchObject({ traceId: T, parentId: S, sampled: true, formats: B3_SINGLE });
    expect(extract(['b3', `${T}-${S}`])).toMatchObject({ sampled: undefined });
    expect(extract(['b3', `${T}-${S}-d`])).toMatchObject({ sampled: true, debug: true });
    expect(extract(['b3', '0'])).toEqual({ sampled: false, debug: false, formats: B3_SINGLE });
    expect(extract(['b3', 'nonsense'])).toBeNull();
  });

  it('prefers W3C, then b3, then x-b3-*, and remembers every format the client used', () => {
    const other = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
    const c = extract(['x-b3-traceid', other, 'x-b3-spanid', S, 'traceparent', `00-${T}-${S}-01`, 'b3', `${other}-${S}-1`]);
    expect(c).toMatchObject({ traceId: T, formats: W3C | B3_MULTI | B3_SINGLE });
  });

  it('writes the formats asked for, overwriting in place on a retry', () => {
    const h = ['host', 'x', 'traceparent', 'old', 'x-b3-traceid', T, 'x-b3-spanid', 'old'];
    const out = { traceId: T, spanId: '1111111111111111', parentId: '2222222222222222', sampled: true, debug: false, formats: W3C | B3_MULTI | B3_SINGLE, traceId64: false };
    inject(h, out);
    inject(h, { ...out, spanId: '3333333333333333' });
    expect(h).toEqual([
      'host', 'x',
      'traceparent', `00-${T}-3333333333333333-01`,
      'x-b3-traceid', T,
      'x-b3-spanid', '3333333333333333',
      'b3', `${T}-3333333333333333-1-2222222222222222`,
      'x-b3-parentspanid', '2222222222222222',
      'x-b3-sampled', '1',
    ]);
  });
});

describe('sampling decision', () => {
  it("x-client-trace-id forces, then a trusted x-envoy-force-trace, then the percent on x-request-id", () => {
    expect(traceReason(0, 'ffffffff-0000', true, false)).toBe(CLIENT_FORCED);
    expect(traceReason(0, 'ffffffff-0000', false, true)).toBe(FORCED);
    expect(traceReason(0, '00000000-0000', false, false)).toBe(NOT_TRACEABLE);
    expect(traceReason(10_000, 'ffffffff', false, false)).toBe(SAMPLED);
    // 50%: the first 8 hex digits of the request id modulo 10,000 against 5,000 (Envoy's UUID extension).
    expect(traceReason(5_000, (4999).toString(16).padStart(8, '0'), false, false)).toBe(SAMPLED);
    expect(traceReason(5_000, (5000).toString(16).padStart(8, '0'), false, false)).toBe(NOT_TRACEABLE);
  });

  it('trusts x-envoy-force-trace only from an internal hop (numTrustedProxies)', () => {
    expect(internalRequest(['x-forwarded-for', '127.0.0.1'], 0, '127.0.0.1')).toBe(true);
    // The client sent an x-forwarded-for of its own: not a single-hop internal request.
    expect(internalRequest(['x-forwarded-for', '10.0.0.1, 127.0.0.1'], 0, '127.0.0.1')).toBe(false);
    expect(internalRequest(['x-forwarded-for', '203.0.113.9'], 0, '203.0.113.9')).toBe(false);
    expect(internalRequest(['x-forwarded-for', '10.1.2.3, 127.0.0.1'], 1, '127.0.0.1')).toBe(true);
    expect(internalRequest(['x-forwarded-for', '203.0.113.9, 127.0.0.1'], 1, '127.0.0.1')).toBe(false);
  });

  it('an incoming decision is respected; no context starts a W3C trace', () => {
    const reg = new Registry();
    const cfg: TracingConfig = { random_sampling: { value: 100 }, custom_tags: [], service_cluster: 'gw.istio-system', spawn_upstream_span: true, use_request_id_for_trace_sampling: true, enable_istio_tags: true };
    const tracer = Tracer.compile(cfg, 'gw.istio-system', { exporters: new TraceExporters(reg), trustedHops: 0 })!;
    const head = (headers: string[]): RequestHead => ({ method: 'GET', path: '/', query: '', host: 'h', authority: 'h', scheme: 'http', headers });
    const off = tracer.start(head([]), ['traceparent', `00-${T}-${S}-00`, 'x-request-id', 'ffffffff'], '127.0.0.1', false, 0);
    expect(off.sampled).toBe(false);
    const fresh = tracer.start(head([]), ['x-request-id', 'ffffffff'], '127.0.0.1', false, 0);
    expect(fresh.sampled).toBe(true);
    const up: string[] = [];
    const span = fresh.upstream(up, 'outbound|80||a');
    expect(up).toEqual(['traceparent', `00-${fresh.traceId}-${span.spanId}-01`]);
    expect(span.name).toBe('router outbound|80||a egress');
  });
});

describe('spans of a request', () => {
  it("the request's span and its attempts' spans: ids, parents, Envoy's tags, custom tags (literal, environment, header)", () => {
    process.env.GATEHOUSE_TEST_ZONE = 'zone-a';
    const records: SpanRecord[] = [];
    const cfg: TracingConfig = {
      random_sampling: { value: 100 },
      custom_tags: [
        { tag: 'team', literal: { value: 'edge' } },
        { tag: 'zone', environment: { name: 'GATEHOUSE_TEST_ZONE' } },
        { tag: 'missing', environment: { name: 'GATEHOUSE_TEST_UNSET', default_value: 'dflt' } },
        { tag: 'tenant', request_header: { name: 'X-Tenant', default_value: 'none' } },
      ],
      service_cluster: 'gw.istio-system',
      max_path_tag_length: 24,
      spawn_upstream_span: true,
      use_request_id_for_trace_sampling: true,
      enable_istio_tags: true,
    };
    const tracer = new Tracer(cfg, { nodeId: 'router~n', serviceName: 'gw.istio-system' }, { provider: 'p', add: (s) => records.push(s) }, 0);
    const headers = ['x-tenant', 't1', 'user-agent', 'curl', 'traceparent', `00-${T}-${S}-01`, 'x-request-id', 'rid'];
    const head: RequestHead = { method: 'POST', path: '/a/very/long/path/indeed', query: 'q=1', host: 'h.test', authority: 'h.test', scheme: 'https', headers };
    const trace = tracer.start(head, headers, '10.0.0.9', false, performance.now());
    const up = headers.slice();
    const a1 = trace.upstream(up, 'outbound|80||svc');
    trace.endUpstream(a1, 503, '10.1.1.1:80', '', 'HTTP/1.1');
    const a2 = trace.upstream(up, 'outbound|80||svc');
    trace.endUpstream(a2, 200, '10.1.1.2:80', '', 'HTTP/1.1');
    expect(up.filter((h) => h === 'traceparent')).toHaveLength(1);
    expect(up[up.indexOf('traceparent') + 1]).toBe(`00-${T}-${a2.spanId}-01`);
    trace.finish({ status: 200, flags: '', cluster: 'outbound|80||svc', operation: 'svc:80/*', requestBytes: 5, responseBytes: 7, protocol: 'HTTP/2' });
    trace.finish({ status: 500, flags: '', cluster: '', operation: '', requestBytes: 0, responseBytes: 0, protocol: '' });
    expect(records.map((r) => [r.name, r.parentId])).toEqual([
      ['router outbound|80||svc egress', trace.spanId],
      ['router outbound|80||svc egress', trace.spanId],
      ['svc:80/*', S],
    ]);
    expect(spanAttributes(records[0]!)).toMatchObject({ 'http.status_code': '503', error: 'true', upstream_address: '10.1.1.1:80' });
    expect(records[1]!.error).toBe(false);
    expect(spanAttributes(records[2]!)).toEqual({
      node_id: 'router~n',
      component: 'proxy',
      team: 'edge',
      zone: 'zone-a',
      missing: 'dflt',
      tenant: 't1',
      'guid:x-request-id': 'rid',
      'http.url': 'https://h.test/a/very/lo',
      'http.method': 'POST',
      downstream_cluster: '-',
      user_agent: 'curl',
      'http.protocol': 'HTTP/2',
      'peer.address': '10.0.0.9',
      request_size: '5',
      upstream_cluster: 'outbound|80||svc',
      'upstream_cluster.name': 'outbound|80||svc',
      'http.status_code': '200',
      response_size: '7',
      response_flags: '-',
    });
  });
});

describe('export through the OpenTelemetry exporters', () => {
  let zipkin: Collector;
  let otlpHttp: Collector;
  let otlpGrpc: Collector;
  beforeAll(async () => {
    [zipkin, otlpHttp, otlpGrpc] = await Promise.all([startZipkinCollector(), startOtlpHttpCollector(), startOtlpGrpcCollector()]);
  });
  afterAll(async () => {
    await Promise.all([zipkin.close(), otlpHttp.close(), otlpGrpc.close()]);
  });

  const timeout = { seconds: 2, nanos: 0 };
  const meta = (name: string) => ({ filter_metadata: { istio: { provider: name } } });
  const providers = (): Record<string, TracingProvider> => ({
    zipkin: {
      name: 'envoy.tracers.zipkin',
      typed_config: { '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig', collector_service: { http_uri: { uri: `http://127.0.0.1:${zipkin.port}/api/v2/spans`, timeout }, request_headers_to_add: [] }, collector_endpoint_version: 'HTTP_JSON', trace_id_128bit: true, shared_span_context: false, trace_context_option: 'USE_B3' },
      metadata: meta('zipkin'),
    },
    otlpHttp: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: { '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig', http_service: { http_uri: { uri: `http://127.0.0.1:${otlpHttp.port}/v1/traces`, timeout }, request_headers_to_add: [] }, service_name: 'gw.istio-system' },
      metadata: meta('otel-http'),
    },
    otlpGrpc: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: { '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig', grpc_service: { authority: `127.0.0.1:${otlpGrpc.port}`, initial_metadata: [] }, service_name: 'gw.istio-system' },
      metadata: meta('otel-grpc'),
    },
  });

  const record = (i: number) => ({
    traceId: T,
    spanId: (0x1000 + i).toString(16).padStart(16, '0'),
    parentId: S,
    name: 'svc.default.svc.cluster.local:80/*',
    kind: 2,
    startMs: Date.now() - 5,
    durationMs: 3.5,
    staticTags: ['component', 'proxy'],
    tags: ['http.status_code', '503'],
    error: true,
  });

  for (const [key, collector] of [['zipkin', () => zipkin], ['otlpHttp', () => otlpHttp], ['otlpGrpc', () => otlpGrpc]] as const) {
    it(`${key}: spans arrive with ids, parent, name, kind, tags and the service name`, async () => {
      const reg = new Registry();
      const sink = new BatchSink(providers()[key]!, 'gw.istio-system', exportMetrics(reg));
      for (let i = 0; i < 3; i++) sink.add(record(i));
      await sink.flush();
      const c = collector();
      await waitFor(() => c.spans.filter((s) => s.traceId === T).length >= 3, 5000);
      const got = c.spans.filter((s) => s.traceId === T).sort((a, b) => (a.spanId < b.spanId ? -1 : 1));
      expect(got.map((s) => s.spanId)).toEqual(['0000000000001000', '0000000000001001', '0000000000001002']);
      expect(got[0]).toMatchObject({ parentId: S, name: 'svc.default.svc.cluster.local:80/*', kind: 'CLIENT', serviceName: 'gw.istio-system' });
      expect(got[0]!.tags).toMatchObject({ 'http.status_code': '503', component: 'proxy' });
      expect(got[0]!.durationUs).toBeGreaterThanOrEqual(3000);
      expect((await reg.getSingleMetricAsString('gatehouse_tracing_spans_exported_total'))).toContain(`provider="${providers()[key]!.metadata.filter_metadata.istio.provider}"} 3`);
      await sink.close();
    });
  }

  it('a refusing or dead collector costs dropped spans, counted; a full queue drops the excess', async () => {
    const reg = new Registry();
    zipkin.failWith = 500;
    try {
      const sink = new BatchSink(providers().zipkin!, 'gw', exportMetrics(reg));
      sink.add(record(1));
      await sink.flush();
      expect(await reg.getSingleMetricAsString('gatehouse_tracing_spans_dropped_total')).toContain('reason="export_failed"} 1');
      await sink.close();
    } finally {
      zipkin.failWith = 0;
    }
    const dead = { ...providers().zipkin!, typed_config: { ...(providers().zipkin!.typed_config as object), collector_service: { http_uri: { uri: 'http://127.0.0.1:1/api/v2/spans', timeout }, request_headers_to_add: [] } } } as unknown as TracingProvider;
    const reg2 = new Registry();
    const sink = new BatchSink(dead, 'gw', exportMetrics(reg2));
    for (let i = 0; i < MAX_QUEUE + 10; i++) sink.add(record(i));
    expect(await reg2.getSingleMetricAsString('gatehouse_tracing_spans_dropped_total')).toContain('reason="queue_full"} 10');
    await sink.flush();
    expect(await reg2.getSingleMetricAsString('gatehouse_tracing_spans_dropped_total')).toContain('reason="export_failed"} 512');
    await sink.close();
  });
});
