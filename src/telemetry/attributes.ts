// Envoy's request attributes (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes)
// of a finished request, for CEL access log filters and metric tag values. Each value is computed
// when an expression reads it, never before; attributes Gatehouse does not track are absent (the
// expression then fails, as in Envoy for an attribute a request does not have).
import { responseFlagBits, type AttributeSource } from '../config/cel.js';
import { getHeader, type RequestHead } from '../routing/request.js';

/** What a finished request exposes to the access log, metric tags and CEL filters. */
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
  /** gRPC: the status the client got ('' when none). */
  readonly grpcStatus?: string;
}

function headerMap(headers: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < headers.length; i += 2) {
    const k = headers[i]!;
    const prev = m.get(k);
    // Envoy joins repeated headers with a comma.
    m.set(k, prev === undefined ? headers[i + 1]! : `${prev},${headers[i + 1]!}`);
  }
  return m;
}

function hostPort(hp: string): { host: string; port: number } | undefined {
  const i = hp.lastIndexOf(':');
  if (i <= 0) return undefined;
  const port = Number(hp.slice(i + 1));
  return Number.isInteger(port) ? { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port } : undefined;
}

const GRPC_CODE = /^\d+$/;

/** `_durationMs`: reserved for request.duration (a CEL duration), not provided yet. */
export function requestAttributes(r: LoggedRequest, _durationMs: number): AttributeSource {
  let headers: Map<string, string> | undefined;
  return {
    attribute(root, field) {
      const h = r.head;
      switch (`${root}.${field}`) {
        case 'request.path':
          return h.query ? `${h.path}?${h.query}` : h.path;
        case 'request.url_path':
          return h.path;
        case 'request.query':
          return h.query;
        case 'request.host':
          return h.authority;
        case 'request.scheme':
          return h.scheme;
        case 'request.method':
          return h.method;
        case 'request.headers':
          return (headers ??= headerMap(h.headers));
        case 'request.referer':
          return getHeader(h, 'referer');
        case 'request.useragent':
          return getHeader(h, 'user-agent');
        case 'request.id':
          return getHeader(h, 'x-request-id');
        case 'request.protocol':
          return r.sink.protocol ?? 'HTTP/1.1';
        case 'request.time':
          return new Date(performance.timeOrigin + r.startedAt);
        case 'request.size':
          return BigInt(r.requestBytes);
        case 'response.code':
          return BigInt(r.code);
        case 'response.flags':
          return responseFlagBits(r.flags);
        case 'response.grpc_status':
          return r.grpcStatus && GRPC_CODE.test(r.grpcStatus) ? BigInt(r.grpcStatus) : undefined;
        case 'response.size':
          return BigInt(r.responseBytes);
        case 'source.address':
          return r.sink.remoteAddress || undefined;
        case 'destination.port':
          return h.localPort !== undefined ? BigInt(h.localPort) : undefined;
        case 'upstream.address':
          return hostPort(r.upstreamHost)?.host;
        case 'upstream.port': {
          const p = hostPort(r.upstreamHost)?.port;
          return p === undefined ? undefined : BigInt(p);
        }
        case 'xds.cluster_name':
          return r.upstreamCluster || undefined;
        case 'xds.route_name':
          return r.route?.name;
        default:
          return undefined;
      }
    },
  };
}
