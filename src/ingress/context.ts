// What a request lifecycle reads of its listener: the config version it serves (route table,
// clusters, policies of one version). The facts of the client's connection are in connection.ts.
import type { ForwardProxyConfig } from '../controlplane/snapshot.js';
import type { ForwardProxy } from '../egress/forward-proxy.js';
import type { RouteTable } from '../routing/route-table.js';
import type { SecurityFilters } from '../security/pipeline.js';
import type { AccessLog } from '../telemetry/access-log.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import type { Tracer } from '../telemetry/tracing/tracer.js';
import type { ClusterSet } from '../upstream/cluster-manager.js';
import type { FilterChain } from './filters/chain.js';

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
  /** This version's tracing (null or none: tracing is off). */
  readonly tracer?: Tracer | null;
}
