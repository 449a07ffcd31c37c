// Envoy-style access logs, as Istio configures them: the Telemetry API's (providers, `disabled`,
// CEL filters), else the mesh config's accessLogFile; TEXT with Istio's default format (or
// accessLogFormat / a provider's text), or JSON with Istio's default keys (or a provider's labels).
// Formats and filters are compiled once per config version into field getters; lines are written
// through buffered streams.
import { createWriteStream, type WriteStream } from 'node:fs';
import { ISTIO_TEXT_FORMAT, meshJsonFormat } from '../config/access-log-format.js';
import { celActivation, compileCel, type AttributeSource, type CelExpression } from '../config/cel.js';
import type { MeshConfig } from '../config/types.js';
import type { AccessLogConfig, TelemetryConfig } from '../controlplane/snapshot.js';
import { getHeader } from '../routing/request.js';
import { requestAttributes, type LoggedRequest } from './attributes.js';

export type { LoggedRequest } from './attributes.js';

type Getter = (r: LoggedRequest, durationMs: number) => string | number | null;

function operator(op: string): Getter {
  const req = /^REQ\(([^)]+)\)(?::\d+)?$/.exec(op);
  if (req) {
    const names = req[1]!.split('?').map((n) => n.toLowerCase());
    return (r) => {
      for (const n of names) {
        const v = n === ':method' ? r.head.method : n === ':authority' ? r.head.authority : n === ':path' ? (r.head.query ? `${r.head.path}?${r.head.query}` : r.head.path) : getHeader(r.head, n);
        if (v !== undefined) return v;
      }
      return null;
    };
  }
  switch (op) {
    case 'START_TIME':
      return (r) => new Date(performance.timeOrigin + r.startedAt).toISOString();
    case 'PROTOCOL':
      return (r) => r.sink.protocol ?? 'HTTP/1.1';
    case 'RESPONSE_CODE':
      return (r) => r.code;
    case 'RESPONSE_FLAGS':
      return (r) => r.flags || '-';
    case 'BYTES_RECEIVED':
      return (r) => r.requestBytes;
    case 'BYTES_SENT':
      return (r) => r.responseBytes;
    case 'DURATION':
      return (_r, d) => Math.round(d);
    case 'UPSTREAM_HOST':
      return (r) => r.upstreamHost || null;
    case 'UPSTREAM_CLUSTER':
    case 'UPSTREAM_CLUSTER_RAW':
      return (r) => r.upstreamCluster || null;
    case 'DOWNSTREAM_REMOTE_ADDRESS':
      return (r) => r.sink.remoteAddress || null;
    case 'ROUTE_NAME':
      return (r) => r.route?.name ?? null;
    default:
      // RESPONSE_CODE_DETAILS, RESP(...), addresses Gatehouse does not track yet: printed as `-`.
      return () => null;
  }
}

/** Compiles an Envoy format string into a line builder (a log line ends with a newline). */
export function compileTextFormat(format: string, line = true): (r: LoggedRequest, durationMs: number) => string {
  const parts: Array<string | Getter> = [];
  const re = /%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%/g;
  let last = 0;
  for (let m = re.exec(format); m; m = re.exec(format)) {
    if (m.index > last) parts.push(format.slice(last, m.index));
    parts.push(operator(m[1]!));
    last = re.lastIndex;
  }
  if (last < format.length) parts.push(format.slice(last));
  if (line && !format.endsWith('\n')) parts.push('\n');
  return (r, d) => {
    let s = '';
    for (const p of parts) {
      if (typeof p === 'string') s += p;
      else {
        const v = p(r, d);
        s += v === null || v === '' ? '-' : String(v);
      }
    }
    return s;
  };
}

/** Envoy's JSON format: each key's format string; a value that is one operator keeps its type. */
function compileJson(fields: Readonly<Record<string, unknown>>, omitEmpty = false): (r: LoggedRequest, durationMs: number) => string {
  const compiled = Object.entries(fields).map(([k, v]) => {
    if (typeof v !== 'string') return [k, () => v] as const;
    const single = /^%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%$/.exec(v);
    if (single) return [k, operator(single[1]!)] as const;
    const text = compileTextFormat(v, false);
    return [k, (r: LoggedRequest, d: number) => text(r, d)] as const;
  });
  return (r, d) => {
    const o: Record<string, unknown> = {};
    for (const [k, g] of compiled) {
      const v = g(r, d);
      if (omitEmpty && (v === null || v === '')) continue;
      o[k] = v;
    }
    return `${JSON.stringify(o)}\n`;
  };
}

type Out = NodeJS.WritableStream | WriteStream;
type Format = (r: LoggedRequest, durationMs: number) => string;

/** One log: where it writes, how, and which requests (Envoy's CEL ExpressionFilter, compiled once). */
interface Sink {
  readonly path: string;
  readonly format: Format;
  readonly filter: CelExpression | null;
}

/**
 * The access logs of one config version: the Telemetry API's (snapshot.telemetry.access_log), or
 * Istio's fallback, the mesh config's accessLogFile. Files are opened once and shared with the
 * versions that write to them too.
 */
export class AccessLog {
  readonly #sinks: Array<Sink & { out: Out }>;
  readonly #streams: Map<string, Out>;
  #closed = false;

  constructor(sinks: Sink[], previous: AccessLog | null) {
    this.#streams = new Map();
    for (const s of sinks) {
      if (this.#streams.has(s.path)) continue;
      const out = (previous ? previous.#streams.get(s.path) : undefined) ?? open(s.path);
      this.#streams.set(s.path, out);
    }
    this.#sinks = sinks.map((s) => ({ ...s, out: this.#streams.get(s.path)! }));
  }

  /** The first file written (for logs and tests). */
  get file(): string {
    return this.#sinks[0]?.path ?? '';
  }

  /** The mesh config's log (Istio's fallback when the Telemetry API configures none). */
  static fromMesh(mesh: MeshConfig, previous: AccessLog | null = null): AccessLog | null {
    if (!mesh.accessLogFile) return null;
    const format = mesh.accessLogEncoding === 'JSON' ? compileJson(meshJsonFormat(mesh)) : compileTextFormat(mesh.accessLogFormat || ISTIO_TEXT_FORMAT);
    return new AccessLog([{ path: mesh.accessLogFile, format, filter: null }], previous);
  }

  /**
   * The logs of a version: the Telemetry API's when it configures logging (none left: null), else
   * the mesh config's. CEL filters are compiled here, once per version.
   */
  static forSnapshot(mesh: MeshConfig, telemetry: TelemetryConfig | undefined, previous: AccessLog | null = null): AccessLog | null {
    const logs = telemetry?.access_log;
    if (!logs) return AccessLog.fromMesh(mesh, previous);
    if (logs.length === 0) return null;
    return new AccessLog(logs.map(sinkOf), previous);
  }

  /** Whether both write to one stream (closing one would close the other's). */
  sharesStream(other: AccessLog | null): boolean {
    if (!other) return false;
    for (const out of this.#streams.values()) for (const o of other.#streams.values()) if (o === out) return true;
    return false;
  }

  log(r: LoggedRequest, durationMs: number): void {
    // A request of an older version whose log file is no longer configured, ending after the
    // drain time: its line has nowhere to go.
    if (this.#closed) return;
    let attrs: AttributeSource | null = null;
    for (const s of this.#sinks) {
      if (s.filter) {
        attrs ??= requestAttributes(r, durationMs);
        // Envoy: a filter that fails to evaluate (an absent attribute...) does not log.
        if (s.filter.evaluate(celActivation(attrs)) !== true) continue;
      }
      s.out.write(s.format(r, durationMs));
    }
  }

  /** Closes the files no other version (`keep`) writes to. */
  close(keep: AccessLog | null = null): void {
    this.#closed = true;
    const kept = new Set(keep ? keep.#streams.values() : []);
    for (const out of this.#streams.values()) {
      if (kept.has(out) || out === process.stdout || out === process.stderr) continue;
      (out as WriteStream).end();
    }
  }
}

function open(path: string): Out {
  return path === '/dev/stdout' ? process.stdout : path === '/dev/stderr' ? process.stderr : createWriteStream(path, { flags: 'a' });
}

function sinkOf(l: AccessLogConfig): Sink {
  const f = l.typed_config.log_format;
  const format = f.json_format ? compileJson(f.json_format, f.omit_empty_values === true) : compileTextFormat(f.text_format_source?.inline_string || ISTIO_TEXT_FORMAT);
  const expr = l.filter?.extension_filter.typed_config.expression;
  return { path: l.typed_config.path, format, filter: expr ? compileCel(expr) : null };
}
