// The inputs of one resolve(), as every builder reads them: the options, the mesh config, the
// resources by kind, Istio's defaults and the warnings sink. The indexes over them and the
// context builders share are in context.ts.
import type {
  DestinationRuleSpec,
  GatewaySpec,
  MeshConfig,
  Problem,
  Resource,
  ServiceEntrySpec,
  SidecarSpec,
  TelemetrySpec,
  VirtualServiceSpec,
  WorkloadEntrySpec,
} from '../../config/types.js';
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
  return { opts, mesh: opts.mesh, config: configByKind(resources), defaults: ISTIO_DEFAULTS, warnings: warningSink() };
}
