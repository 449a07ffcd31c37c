// The inputs of one resolve(), as every builder reads them: the options, the mesh config, the
// resources by kind, Istio's defaults and the warnings sink. The indexes over them and the
// context builders share are in context.ts.
import type {
  DestinationRuleSpec,
  GatewaySpec,
  KubeEndpointSliceDocument,
  KubePodDocument,
  KubeServiceDocument,
  MeshConfig,
  Problem,
  Resource,
  ServiceEntrySpec,
  SidecarSpec,
  TelemetrySpec,
  VirtualServiceSpec,
  WorkloadEntrySpec,
} from '../../config/types.js';
import { DEFAULT_CLUSTER_DOMAIN } from '../../config/hosts.js';
import { formatPath, resourceId } from '../../config/types.js';
import { ISTIO_DEFAULTS, type IstioDefaults } from './defaults.js';

export interface ResolveOptions {
  /** `--labels`: this gateway's workload labels. */
  labels: Readonly<Record<string, string>>;
  /** `--namespace`: the gateway's own namespace. */
  namespace: string;
  /** `--bind`: address the Gateway listeners bind to. */
  bind: string;
  mesh: MeshConfig;
  /** `gatehouse validate` without --labels: translate every Gateway, whatever its selector. */
  allGateways?: boolean;
  /**
   * `--cluster-domain`: a Kubernetes Service is `<name>.<namespace>.svc.<domain>`, and short hosts
   * complete the same way; default `cluster.local`.
   */
  clusterDomain?: string;
  /**
   * Build the sidecar views (what sidecars and proxyless gRPC clients get over xDS); default
   * true. A gateway without an xDS server has no use for them (with many namespaces and services
   * they are most of the translation).
   */
  sidecarViews?: boolean;
}

/** The resources of each kind resolve() reads, in config order (Istio: creation order). */
export interface ConfigByKind {
  readonly all: readonly Resource[];
  readonly gateways: ReadonlyArray<Resource<GatewaySpec>>;
  readonly virtualServices: ReadonlyArray<Resource<VirtualServiceSpec>>;
  readonly destinationRules: ReadonlyArray<Resource<DestinationRuleSpec>>;
  readonly serviceEntries: ReadonlyArray<Resource<ServiceEntrySpec>>;
  readonly workloadEntries: ReadonlyArray<Resource<WorkloadEntrySpec>>;
  readonly sidecars: ReadonlyArray<Resource<SidecarSpec>>;
  readonly peerAuthentications: ReadonlyArray<Resource<PeerAuthenticationSpec>>;
  readonly telemetries: ReadonlyArray<Resource<TelemetrySpec>>;
  /** Kubernetes (`--kubernetes`): Services (v1), EndpointSlices (discovery.k8s.io/v1), Pods (v1). */
  readonly services: ReadonlyArray<Resource<KubeServiceDocument>>;
  readonly endpointSlices: ReadonlyArray<Resource<KubeEndpointSliceDocument>>;
  readonly pods: ReadonlyArray<Resource<KubePodDocument>>;
}

/** security.istio.io PeerAuthentication spec (the fields Gatehouse reads). */
export interface PeerAuthenticationSpec {
  selector?: { matchLabels?: Record<string, string> };
  mtls?: { mode?: string };
  portLevelMtls?: Record<string, { mode?: string }>;
}

export type Warn = (r: Resource, path: ReadonlyArray<string | number>, message: string) => void;

/** What the translation could not honour, at the resource field it concerns (file:line). */
export interface WarningSink {
  readonly warn: Warn;
  /** A warning shared by many outputs (one DestinationRule, many clusters): said once. */
  readonly warnOnce: Warn;
  /** Everything said, in order, each problem once. */
  list(): Problem[];
}

/** The inputs every builder reads. */
export interface BuildInputs {
  readonly opts: ResolveOptions;
  /** The cluster's DNS domain (`opts.clusterDomain`, else `cluster.local`). */
  readonly domain: string;
  readonly mesh: MeshConfig;
  readonly config: ConfigByKind;
  readonly defaults: IstioDefaults;
  readonly warnings: WarningSink;
}

export function configByKind(resources: readonly Resource[]): ConfigByKind {
  const byKind = new Map<string, Resource[]>();
  // One pass, each kind in config order (large configs have tens of thousands of resources).
  for (const r of resources) {
    const list = byKind.get(r.kind);
    if (list) list.push(r);
    else byKind.set(r.kind, [r]);
  }
  const of = <S>(kind: string): Array<Resource<S>> => (byKind.get(kind) ?? []) as Array<Resource<S>>;
  // Kubernetes kinds at their own API version only (a Knative `Service` is another kind).
  const kube = <S>(kind: string, apiVersion: string): Array<Resource<S>> => of<S>(kind).filter((r) => r.apiVersion === apiVersion);
  return {
    all: resources,
    gateways: of('Gateway'),
    virtualServices: of('VirtualService'),
    destinationRules: of('DestinationRule'),
    serviceEntries: of('ServiceEntry'),
    workloadEntries: of('WorkloadEntry'),
    sidecars: of('Sidecar'),
    peerAuthentications: of('PeerAuthentication'),
    telemetries: of('Telemetry'),
    services: kube('Service', 'v1'),
    endpointSlices: kube('EndpointSlice', 'discovery.k8s.io/v1'),
    pods: kube('Pod', 'v1'),
  };
}

export function warningSink(): WarningSink {
  const list: Problem[] = [];
  const said = new Set<string>();
  const key = (p: Problem): string => `${p.resource}\0${p.path}\0${p.message}`;
  const problem = (r: Resource, path: ReadonlyArray<string | number>, message: string): Problem => ({
    file: r.source.file,
    line: r.source.lineOf(path),
    resource: resourceId(r),
    path: formatPath(path),
    message,
    severity: 'warning',
  });
  return {
    warn(r, path, message) {
      const p = problem(r, path, message);
      said.add(key(p));
      list.push(p);
    },
    warnOnce(r, path, message) {
      const p = problem(r, path, message);
      if (said.has(key(p))) return;
      said.add(key(p));
      list.push(p);
    },
    list() {
      // The same problem reported by several views (a VirtualService in every namespace's view) once.
      const seen = new Set<string>();
      return list.filter((p) => {
        const k = `${p.file}\0${p.line}\0${p.resource}\0${p.path}\0${p.message}`;
        if (seen.has(k)) return false;
        seen.add(k);
        return true;
      });
    },
  };
}

/** The inputs of one resolve(). */
export function buildInputs(resources: readonly Resource[], opts: ResolveOptions): BuildInputs {
  return { opts, domain: opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN, mesh: opts.mesh, config: configByKind(resources), defaults: ISTIO_DEFAULTS, warnings: warningSink() };
}
