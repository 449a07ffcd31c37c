// Stand-ins for trace collectors, speaking the real protocols: Zipkin's JSON v2 (`POST
// /api/v2/spans`), OTLP over HTTP (protobuf `ExportTraceServiceRequest` on `/v1/traces`) and OTLP
// over gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`). The OTLP messages are
// decoded with the OpenTelemetry project's own .proto definitions (opentelemetry-proto, as shipped
// in @opentelemetry/otlp-grpc-exporter-base, installed as `otlp-protos`), by protobufjs and
// @grpc/proto-loader: no hand-written decoder. Every receiver normalises to one span shape.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const PROTO_ROOT = join(dirname(require.resolve('otlp-protos/package.json')), 'build', 'protos');
const TRACE_SERVICE = 'opentelemetry/proto/collector/trace/v1/trace_service.proto';

/** A span as any of the receivers saw it. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentId: string;
  name: string;
  /** 'CLIENT', 'SERVER', ... */
  kind: string;
  tags: Record<string, string>;
  serviceName: string;
  durationUs: number;
  /** OTLP status code (2: ERROR); Zipkin: undefined. */
  statusCode?: number;
}

export interface Collector {
  port: number;
  readonly spans: ReceivedSpan[];
  /** Requests (export calls) received. */
  readonly requests: number;
  /** Answer every export with this HTTP status (Zipkin, OTLP/HTTP) or gRPC status code; 0: success. */
  failWith: number;
  close(): Promise<void>;
}

function httpCollector(path: string, decode: (body: Buffer, contentType: string) => ReceivedSpan[]): Promise<Collector> {
  const c = { port: 0, spans: [] as ReceivedSpan[], requests: 0, failWith: 0, close: async () => undefined } as Collector & { server: Server; requests: number };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      c.requests++;
      if (req.method !== 'POST' || req.url !== path) {
        res.writeHead(404).end();
        return;
      }
      if (c.failWith) {
        res.writeHead(c.failWith).end();
        return;
      }
      try {
        c.spans.push(...decode(Buffer.concat(chunks), String(req.headers['content-type'] ?? '')));
        res.writeHead(path.includes('v1/traces') ? 200 : 202, path.includes('v1/traces') ? { 'content-type': 'application/x-protobuf' } : {}).end();
      } catch (e) {
        res.writeHead(400).end(String(e));
      }
    });
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      c.port = (server.address() as AddressInfo).port;
      c.close = () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        });
      resolve(c);
    });
  });
}

interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name: string;
  kind?: string;
  duration: number;
  localEndpoint?: { serviceName?: string };
  tags?: Record<string, string>;
}

/** Zipkin's collector API v2: a JSON array of spans on POST /api/v2/spans (or `path`). */
export function startZipkinCollector(path = '/api/v2/spans'): Promise<Collector> {
  return httpCollector(path, (body, type) => {
    if (!type.startsWith('application/json')) throw new Error(`content-type ${type}`);
    const spans = JSON.parse(body.toString('utf8')) as ZipkinSpan[];
    return spans.map((s) => ({
      traceId: s.traceId,
      spanId: s.id,
      parentId: s.parentId ?? '',
      name: s.name,
      kind: s.kind ?? '',
      tags: s.tags ?? {},
      serviceName: s.localEndpoint?.serviceName ?? '',
      durationUs: s.duration,
    }));
  });
}

let root: protobuf.Root | null = null;
function otlpRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => (target.startsWith('/') ? target : join(PROTO_ROOT, target));
  r.loadSync(TRACE_SERVICE, { keepCase: false });
  root = r;
  return r;
}

/** An ExportTraceServiceRequest (as a plain object, ids as bytes) → spans. */
function fromOtlp(req: { resourceSpans?: Array<{ resource?: { attributes?: KV[] }; scopeSpans?: Array<{ spans?: OtlpSpan[] }>; instrumentationLibrarySpans?: Array<{ spans?: OtlpSpan[] }> }> }): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  const KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
  for (const rs of req.resourceSpans ?? []) {
    const service = attrs(rs.resource?.attributes)['service.name'] ?? '';
    for (const ss of [...(rs.scopeSpans ?? []), ...(rs.instrumentationLibrarySpans ?? [])]) {
      for (const s of ss.spans ?? []) {
        const kind = typeof s.kind === 'string' ? s.kind.replace('SPAN_KIND_', '') : KINDS[s.kind ?? 0]!;
        const start = BigInt(String(s.startTimeUnixNano ?? 0));
        const end = BigInt(String(s.endTimeUnixNano ?? 0));
        out.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentId: hex(s.parentSpanId),
          name: s.name ?? '',
          kind,
          tags: attrs(s.attributes),
          serviceName: service,
          durationUs: Number((end - start) / 1000n),
          statusCode: typeof s.status?.code === 'string' ? ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'].indexOf(s.status.code) : (s.status?.code ?? 0),
        });
      }
    }
  }
  return out;
}

interface KV {
  key: string;
  value?: { stringValue?: string; intValue?: unknown; boolValue?: boolean; doubleValue?: number };
}
interface OtlpSpan {
  traceId?: Uint8Array;
  spanId?: Uint8Array;
  parentSpanId?: Uint8Array;
  name?: string;
  kind?: number | string;
  startTimeUnixNano?: unknown;
  endTimeUnixNano?: unknown;
  attributes?: KV[];
  status?: { code?: number | string };
}

const hex = (b: Uint8Array | undefined): string => (b && b.length ? Buffer.from(b).toString('hex') : '');
function attrs(kvs: KV[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of kvs ?? []) {
    const v = kv.value ?? {};
    out[kv.key] = v.stringValue ?? (v.intValue !== undefined ? String(v.intValue) : v.boolValue !== undefined ? String(v.boolValue) : v.doubleValue !== undefined ? String(v.doubleValue) : '');
  }
  return out;
}

/** OTLP/HTTP with protobuf bodies on POST /v1/traces (or `path`). */
export function startOtlpHttpCollector(path = '/v1/traces'): Promise<Collector> {
  const type = otlpRoot().lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
  return httpCollector(path, (body, ct) => {
    if (!ct.startsWith('application/x-protobuf')) throw new Error(`content-type ${ct}`);
    const msg = type.toObject(type.decode(body), { longs: String, enums: Number, bytes: Buffer as unknown as typeof Uint8Array });
    return fromOtlp(msg as Parameters<typeof fromOtlp>[0]);
  });
}

/** OTLP/gRPC: the TraceService of opentelemetry-proto on a grpc-js server. */
export async function startOtlpGrpcCollector(): Promise<Collector> {
  const def = protoLoader.loadSync(TRACE_SERVICE, { includeDirs: [PROTO_ROOT], keepCase: false, longs: String, enums: Number, bytes: Buffer, defaults: false });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { opentelemetry: { proto: { collector: { trace: { v1: { TraceService: grpc.ServiceClientConstructor } } } } } };
  const svc = pkg.opentelemetry.proto.collector.trace.v1.TraceService.service;
  const server = new grpc.Server();
  const c = { port: 0, spans: [] as ReceivedSpan[], requests: 0, failWith: 0, close: async () => undefined } as Collector & { requests: number };
  server.addService(svc, {
    Export: (call: grpc.ServerUnaryCall<Parameters<typeof fromOtlp>[0], unknown>, cb: grpc.sendUnaryData<unknown>) => {
      c.requests++;
      if (c.failWith) return cb({ code: c.failWith, details: 'refused by the test' } as grpc.ServiceError, null);
      c.spans.push(...fromOtlp(call.request));
      cb(null, {});
    },
  });
  c.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  c.close = () => new Promise<void>((r) => server.tryShutdown(() => r()));
  return c;
}
