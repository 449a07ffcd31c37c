// The service registry: every service the gateway can route to, by host, with its ports and
// endpoints — Istio's model.Service / ServiceInstance, independent of where a service comes from:
// ServiceEntries and the WorkloadEntries they select (below), and with `--kubernetes` the
// Kubernetes Services, their EndpointSlices and Pods (kubernetes.ts). Builders read only this model.
import { completeHost } from '../../config/hosts.js';
import type { Resource, ServiceEntrySpec, WorkloadEntrySpec } from '../../config/types.js';
import type { BuildInputs } from './inputs.js';
import { labelsMatch } from './visibility.js';

export interface ServicePort {
  number: number;
  name: string;
  /** Upper-case Istio protocol; '' when unset (Istio sniffs it). */
  protocol: string;
  targetPort?: number;
}

/** One workload behind a service: an address, its named ports, labels, locality and weight. */
export interface ServiceEndpoint extends WorkloadEntrySpec {
  /** Workload name (WorkloadEntry name, `<ServiceEntry>-<index>` for inline endpoints, Pod name). */
  workload: string;
  workloadNamespace: string;
  /**
   * It serves only the service ports named in `ports` (a Kubernetes endpoint: the ports of its
   * EndpointSlice); otherwise a port it does not name is served on the service's target port.
   */
  strictPorts?: boolean;
}

/** How a service's endpoints are found: ServiceEntry `resolution` (STATIC for Kubernetes Services). */
export type Resolution = 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN' | 'DYNAMIC_DNS';

export interface RegistryService {
  host: string;
  namespace: string;
  ports: ServicePort[];
  endpoints: ServiceEndpoint[];
  resolution: Resolution;
  exportTo: readonly string[] | undefined;
  /** The resource that declares it. */
  source: Resource;
  /** Which registry it comes from: a Kubernetes Service wins its host over a ServiceEntry (Istio). */
  origin: 'kubernetes' | 'serviceentry';
  /**
   * An ExternalName Service: an alias of this host. It has no cluster of its own; routes to it go
   * to the clusters of the host it names (Istio's `model.Alias`).
   */
  aliasFor?: string;
}

export interface ServiceRegistry {
  get(host: string): RegistryService | undefined;
  /** Every service but aliases, by host name (localeCompare): the order of clusters and views. */
  readonly sorted: readonly RegistryService[];
  /** In the order they were declared (aliases too). */
  readonly declared: readonly RegistryService[];
  /** A destination's port: the explicit one, else the service's only port; undefined when ambiguous. */
  destinationPort(host: string, explicit: number | undefined): number | undefined;
  /** The host whose clusters serve a destination host: the one an alias names, else the host itself. */
  clusterHost(host: string): string;
  /** The aliases (ExternalName Services) of a host. */
  aliasesOf(host: string): readonly RegistryService[];
}

/** Service port protocols spoken over HTTP/2 upstream (h2c, or h2 over TLS). */
const HTTP2_PROTOCOLS: ReadonlySet<string> = new Set(['GRPC', 'GRPC-WEB', 'HTTP2']);
/**
 * Service port protocols that get HTTP routes in the sidecar view and the forward proxy: Istio's
 * IsHTTPOrSniffed, i.e. HTTP-based ones and '' (protocol unset: Istio sniffs it, so HTTP traffic
 * gets the HTTP routes). MONGO, MYSQL, REDIS, TCP, TLS, HTTPS are proxied as TCP.
 */
const HTTP_SERVICE_PROTOCOLS: ReadonlySet<string> = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB', 'HTTP_PROXY', '']);

export const isHttp2Protocol = (protocol: string): boolean => HTTP2_PROTOCOLS.has(protocol);
export const isHttpOrSniffed = (protocol: string): boolean => HTTP_SERVICE_PROTOCOLS.has(protocol);

/**
 * A registry over services from every source, in order of precedence: for a host declared twice,
 * the first wins. Istio: a Kubernetes Service wins over a ServiceEntry whatever their ages (no
 * "domain squatting" before the Service exists: PushContext.initServiceRegistry,
 * SidecarScope.appendSidecarServices), and among ServiceEntries the oldest wins; so the Kubernetes
 * services come first. `shadowed` is told of each service that lost its host.
 */
export function buildRegistry(sources: ReadonlyArray<Iterable<RegistryService>>, shadowed?: (lost: RegistryService, winner: RegistryService) => void): ServiceRegistry {
  const byHost = new Map<string, RegistryService>();
  for (const source of sources) {
    for (const svc of source) {
      const winner = byHost.get(svc.host);
      if (!winner) byHost.set(svc.host, svc);
      else shadowed?.(svc, winner);
    }
  }
  const declared = [...byHost.values()];
  const aliases = new Map<string, RegistryService[]>();
  for (const svc of declared) {
    if (svc.aliasFor === undefined) continue;
    const list = aliases.get(svc.aliasFor);
    if (list) list.push(svc);
    else aliases.set(svc.aliasFor, [svc]);
  }
  const concrete = aliases.size === 0 ? declared : declared.filter((s) => s.aliasFor === undefined);
  const sorted = [...concrete].sort((a, b) => a.host.localeCompare(b.host));
  return {
    get: (host) => byHost.get(host),
    sorted,
    declared,
    destinationPort(host, explicit) {
      if (explicit !== undefined) return explicit;
      const svc = byHost.get(host);
      if (svc && svc.ports.length === 1) return svc.ports[0]!.number;
      return undefined;
    },
    clusterHost: (host) => byHost.get(host)?.aliasFor ?? host,
    aliasesOf: (host) => aliases.get(host) ?? [],
  };
}

/**
 * Services from ServiceEntries (standalone mode has no Kubernetes Services): one per host, its
 * endpoints the inline ones and the WorkloadEntries of its namespace its workloadSelector selects.
 * A DNS ServiceEntry without endpoints resolves its host itself, as Istio's conversion does.
 */
export function serviceEntryServices({ config, warnings, domain }: BuildInputs): RegistryService[] {
  const out: RegistryService[] = [];
  for (const se of config.serviceEntries) {
    const ns = se.metadata.namespace;
    const ports: ServicePort[] = [];
    (se.spec.ports ?? []).forEach((p, i) => {
      // Unset or "": Istio sniffs the protocol; an HTTP route to such a port goes upstream as HTTP/1.1.
      const protocol = (p.protocol ?? '').toUpperCase();
      const at = ['spec', 'ports', i, 'protocol'];
      if (protocol === 'UDP') {
        // Istio builds no cluster for a UDP port (the proxy does not carry UDP).
        warnings.warn(se, at, 'UDP is not proxied (by Istio either): this port gets no cluster, routes to it find no destination');
        return;
      }
      if (protocol === 'HTTP_PROXY') warnings.warn(se, at, 'HTTP_PROXY declares a Sidecar egress proxy port; on a ServiceEntry port it is served as HTTP, as Istio does');
      ports.push({ number: p.number, name: p.name, protocol, ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}) });
    });
    const endpoints = serviceEntryEndpoints(se, config.workloadEntries);
    const resolution = se.spec.resolution ?? 'NONE';
    for (const rawHost of se.spec.hosts ?? []) {
      const host = completeHost(rawHost, ns, domain);
      const dnsSelf = endpoints.length === 0 && (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN');
      out.push({
        host,
        namespace: ns,
        ports,
        endpoints: dnsSelf ? [{ address: host, workload: host, workloadNamespace: ns }] : endpoints,
        resolution,
        exportTo: se.spec.exportTo,
        source: se,
        origin: 'serviceentry',
      });
    }
  }
  return out;
}

function serviceEntryEndpoints(se: Resource<ServiceEntrySpec>, workloadEntries: ReadonlyArray<Resource<WorkloadEntrySpec>>): ServiceEndpoint[] {
  const ns = se.metadata.namespace;
  const endpoints: ServiceEndpoint[] = [];
  (se.spec.endpoints ?? []).forEach((ep, i) => endpoints.push({ ...ep, workload: `${se.metadata.name}-${i}`, workloadNamespace: ns }));
  const selector = se.spec.workloadSelector?.labels;
  if (selector) {
    for (const we of workloadEntries) {
      if (we.metadata.namespace !== ns) continue;
      const labels = { ...(we.metadata.labels ?? {}), ...(we.spec.labels ?? {}) };
      if (labelsMatch(selector, labels)) endpoints.push({ ...we.spec, labels, workload: we.metadata.name, workloadNamespace: ns });
    }
  }
  return endpoints;
}
