// What a request lifecycle reads of its listener and connection: the config version it serves
// (route table, clusters, policies of one version) and the facts of the client's connection.
import { isIP } from 'node:net';
import type { ForwardProxyConfig } from '../controlplane/snapshot.js';
import type { ForwardProxy } from '../egress/forward-proxy.js';
import type { RequestHead } from '../routing/request.js';
import type { RouteTable } from '../routing/route-table.js';
import type { SecurityFilters } from '../security/pipeline.js';
import type { SecurityRequest } from '../security/types.js';
import type { AccessLog } from '../telemetry/access-log.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import type { ClusterSet } from '../upstream/cluster-manager.js';
import type { FilterChain } from './filters/chain.js';
import type { ResponseSink } from './sink.js';

/**
 * One config version as a listener serves it: its route table with the clusters and policies of
 * the same version. The data plane swaps it as one reference; a request reads it once, when it
 * starts, and keeps it to its end, so that a reload never mixes one version's tables with
 * another's clusters.
 */
export interface DataPlaneContext {
  readonly clusters: ClusterSet;
  readonly metrics: IstioMetrics;
  readonly accessLog: AccessLog | null;
  /** A request reached BlackHoleCluster (REGISTRY_ONLY, host not in the registry): logged and counted. */
  readonly blocked?: (host: string, port: number) => void;
  /** The listener's route table (none: every request is answered 404 NR). */
  readonly table?: RouteTable | undefined;
  /** The listener's JWT and AuthorizationPolicy filters (null or none: no policy applies). */
  readonly security?: SecurityFilters | null;
  /** An HTTP egress port that is also a forward proxy (node engine): CONNECT and absolute-form requests. */
  readonly forwardProxy?: { readonly config: ForwardProxyConfig; readonly proxy: ForwardProxy } | null;
  /** The route policies before the router; unset: HTTP_FILTERS (filters/chain.ts). */
  readonly filters?: FilterChain;
}

/** What the security filters read of a connection (a ResponseSink has it). */
export type ConnectionFacts = Pick<ResponseSink, 'remoteAddress' | 'localAddress' | 'serverName' | 'peerSpiffeId' | 'peerPrincipal' | 'peerNamespace'>;

/** The SecurityRequest of a request head on a connection; `headers` are the ones going upstream. */
export function securityRequest(head: RequestHead, conn: ConnectionFacts, trustedHops: number, headers: string[]): SecurityRequest {
  const sourceIp = conn.remoteAddress;
  const spiffe = conn.peerSpiffeId;
  // The mesh identity as the TLS layer read it; else the SPIFFE id without `spiffe://`.
  const principal = conn.peerPrincipal ?? (spiffe !== undefined && spiffe.startsWith('spiffe://') ? spiffe.slice(9) : '');
  const ns = principal.indexOf('/ns/');
  return {
    method: head.method,
    path: head.path,
    query: head.query,
    host: head.host,
    authority: head.authority,
    headers,
    localPort: head.localPort ?? 0,
    sourceIp,
    remoteIp: trustedClientAddress(headers, trustedHops, sourceIp),
    destinationIp: conn.localAddress ?? '',
    sourcePrincipal: principal,
    sourceNamespace: conn.peerNamespace ?? (ns >= 0 ? principal.slice(ns + 4).split('/')[0]! : ''),
    sni: conn.serverName ?? '',
  };
}

/**
 * `remote.ip` as Envoy derives it with use_remote_address and xff_num_trusted_hops = N: the Nth
 * address from the right of the X-Forwarded-For the client sent (the listener appended the peer
 * to it), else the peer itself (N = 0, too few or invalid entries).
 */
export function trustedClientAddress(headers: readonly string[], hops: number, peer: string): string {
  if (hops <= 0) return peer;
  let xff: string | undefined;
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'x-forwarded-for') xff = headers[i + 1];
  if (xff === undefined) return peer;
  const parts = xff.split(',');
  // The last entry is the peer appended by the listener: the Nth from the right of the rest.
  const i = parts.length - 1 - hops;
  if (i < 0) return peer;
  const ip = parts[i]!.trim();
  return isIP(ip) !== 0 ? ip : peer;
}
