// Envoy-style access log, as Istio configures it: off unless meshConfig.accessLogFile is set; TEXT
// with Istio's default format (or accessLogFormat), or JSON with Istio's default keys. The format is
// compiled once into a list of field getters; lines are written through a buffered stream.
import { createWriteStream, type WriteStream } from 'node:fs';
import type { MeshConfig } from '../config/types.js';
import { getHeader, type RequestHead } from '../routing/request.js';

/** What a finished request exposes to the access log. */
export interface LoggedRequest {
  readonly head: RequestHead;
  readonly startedAt: number;
  readonly code: number;
  readonly flags: string;
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly upstreamHost: string;
  readonly upstreamCluster: string;
  readonly route: { name: string } | undefined;
  readonly sink: { remoteAddress: string; readonly protocol?: string | undefined };
}

export const ISTIO_TEXT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n';

/** Istio's default JSON access log keys and the operators they print. */
const ISTIO_JSON_FIELDS: Array<[string, string]> = [
  ['start_time', 'START_TIME'],
  ['method', 'REQ(:METHOD)'],
  ['path', 'REQ(X-ENVOY-ORIGINAL-PATH?:PATH)'],
  ['protocol', 'PROTOCOL'],
  ['response_code', 'RESPONSE_CODE'],
  ['response_flags', 'RESPONSE_FLAGS'],
  ['bytes_received', 'BYTES_RECEIVED'],
  ['bytes_sent', 'BYTES_SENT'],
  ['duration', 'DURATION'],
  ['x_forwarded_for', 'REQ(X-FORWARDED-FOR)'],
  ['user_agent', 'REQ(USER-AGENT)'],
  ['request_id', 'REQ(X-REQUEST-ID)'],
  ['authority', 'REQ(:AUTHORITY)'],
  ['upstream_host', 'UPSTREAM_HOST'],
  ['upstream_cluster', 'UPSTREAM_CLUSTER'],
  ['downstream_remote_address', 'DOWNSTREAM_REMOTE_ADDRESS'],
  ['route_name', 'ROUTE_NAME'],
];

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

/** Compiles an Envoy format string into a line builder. */
export function compileTextFormat(format: string): (r: LoggedRequest, durationMs: number) => string {
  const parts: Array<string | Getter> = [];
  const re = /%([A-Z_]+(?:\([^)]*\))?(?::\d+)?)%/g;
  let last = 0;
  for (let m = re.exec(format); m; m = re.exec(format)) {
    if (m.index > last) parts.push(format.slice(last, m.index));
    parts.push(operator(m[1]!));
    last = re.lastIndex;
  }
  if (last < format.length) parts.push(format.slice(last));
  if (!format.endsWith('\n')) parts.push('\n');
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

function compileJson(): (r: LoggedRequest, durationMs: number) => string {
  const fields = ISTIO_JSON_FIELDS.map(([k, op]) => [k, operator(op)] as const);
  return (r, d) => {
    const o: Record<string, string | number | null> = {};
    for (const [k, g] of fields) o[k] = g(r, d);
    return `${JSON.stringify(o)}\n`;
  };
}

export class AccessLog {
  readonly file: string;
  readonly #out: NodeJS.WritableStream | WriteStream;
  readonly #format: (r: LoggedRequest, durationMs: number) => string;
  #closed = false;

  /** `out`: the stream of an earlier version's log of the same file (shared, not reopened). */
  constructor(mesh: MeshConfig, out?: NodeJS.WritableStream | WriteStream) {
    const file = mesh.accessLogFile;
    this.file = file;
    this.#out = out ?? (file === '/dev/stdout' ? process.stdout : file === '/dev/stderr' ? process.stderr : createWriteStream(file, { flags: 'a' }));
    this.#format = mesh.accessLogEncoding === 'JSON' ? compileJson() : compileTextFormat(mesh.accessLogFormat || ISTIO_TEXT_FORMAT);
  }

  /** The mesh config's log; one to the same file as `previous` writes to its stream. */
  static fromMesh(mesh: MeshConfig, previous: AccessLog | null = null): AccessLog | null {
    if (!mesh.accessLogFile) return null;
    return new AccessLog(mesh, previous !== null && previous.file === mesh.accessLogFile ? previous.#out : undefined);
  }

  /** Whether both write to one stream (closing one would close the other's). */
  sharesStream(other: AccessLog | null): boolean {
    return other !== null && other.#out === this.#out;
  }

  log(r: LoggedRequest, durationMs: number): void {
    // A request of an older version whose log file is no longer configured, ending after the
    // drain time: its line has nowhere to go.
    if (this.#closed) return;
    this.#out.write(this.#format(r, durationMs));
  }

  close(): void {
    this.#closed = true;
    if (this.#out !== process.stdout && this.#out !== process.stderr) (this.#out as WriteStream).end();
  }
}
