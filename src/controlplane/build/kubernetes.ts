// Kubernetes Services, their EndpointSlices and the Pods behind them → registry services, as
// istiod's Kubernetes registry builds them (pilot/pkg/serviceregistry/kube: conversion.go,
// controller/endpointslice.go, endpoint_builder.go, pod.go; pkg/config/kube/conversion.go):
// - a Service is the host `<name>.<namespace>.svc.<cluster domain>` with its ports, each port's
//   protocol from `appProtocol`, else the port name's prefix, else unset (sniffed: a gateway sends
//   HTTP routes to it as HTTP/1.1); UDP ports carry nothing;
// - its endpoints are the ready endpoints of the EndpointSlices labelled
//   `kubernetes.io/service-name: <name>` (not-ready and terminating ones are left out, as Istio
//   does by default; `publishNotReadyAddresses` makes Kubernetes mark them ready), one per
//   address and service port name, on the port the slice gives for that name (Kubernetes has
//   resolved a named targetPort there), labelled with their Pod's labels (found by `targetRef`);
//   an endpoint whose Pod is not known yet waits for it;
// - a headless Service (clusterIP None) is routed by a gateway to its endpoints (EDS), as Istio
//   does for a gateway (it falls back from ORIGINAL_DST to EDS);
// - an ExternalName Service is an alias of the host it names (Istio ≥ 1.21,
//   ENABLE_EXTERNAL_NAME_ALIAS): routes to it go to that host's clusters, which a Service or a
//   ServiceEntry must declare;
// - WorkloadEntries of the Service's namespace that its selector selects are endpoints too
//   (PILOT_ENABLE_K8S_SELECT_WORKLOAD_ENTRIES, on by default), on the targetPort (by number, or by
//   name from the WorkloadEntry's ports).
import { serviceHost } from '../../config/hosts.js';
import type { KubeContainerPort, KubeEndpointSliceDocument, KubePodDocument, KubeServiceDocument, KubeServicePort, Resource, WorkloadEntrySpec } from '../../config/types.js';
import type { BuildInputs } from './inputs.js';
import type { RegistryService, ServiceEndpoint, ServicePort } from './registry.js';
import { labelsMatch } from './visibility.js';

/** The label naming an EndpointSlice's Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Multi-cluster services' slices (MCS), which istiod's Kubernetes registry leaves out. */
const MCS_SERVICE_NAME_LABEL = 'multicluster.kubernetes.io/service-name';
/** Istio's annotation limiting where a Service is visible (comma-separated namespaces, `.`, `*`, `~`). */
export const EXPORT_TO_ANNOTATION = 'networking.istio.io/exportTo';
/** A Pod label giving its locality as `region.zone.subzone` (Istio reads it before the node's labels). */
const LOCALITY_LABEL = 'istio-locality';

/** Ports Istio treats as TCP when their name says nothing (protocol sniffing would break them). */
const WELL_KNOWN_TCP_PORTS: ReadonlySet<number> = new Set([25, 53, 3306, 27017]);

/** Istio's protocol names (pkg/config/protocol Parse), upper-cased as Gatehouse writes them. */
const PROTOCOL_NAMES: Readonly<Record<string, string>> = {
  tcp: 'TCP',
  udp: 'UDP',
  grpc: 'GRPC',
  'grpc-web': 'GRPC-WEB',
  http: 'HTTP',
  http_proxy: 'HTTP_PROXY',
  http2: 'HTTP2',
  https: 'HTTPS',
  tls: 'TLS',
  mongo: 'MONGO',
  redis: 'REDIS',
  mysql: 'MYSQL',
};

/**
 * A Service port's Istio protocol (pkg/config/kube ConvertProtocol): UDP for a UDP port; else from
 * `appProtocol` when set (Kubernetes' `kubernetes.io/h2c` is HTTP2, `kubernetes.io/ws` HTTP,
 * `kubernetes.io/wss` HTTPS), else from the port name: `grpc-web` as a prefix, else the part
 * before the first `-` (`http`, `http-api`, `grpc-x`, `tcp-db`, `mongo`...), case-insensitive;
 * anything else is unset ('', sniffed), but on ports 25, 53, 3306 and 27017, which are TCP.
 */
export function convertProtocol(port: number, name: string | undefined, protocol: string | undefined, appProtocol: string | undefined): string {
  if ((protocol ?? 'TCP').toUpperCase() === 'UDP') return 'UDP';
  let n = name ?? '';
  if (appProtocol !== undefined && appProtocol !== '') {
    n = appProtocol;
    if (n === 'kubernetes.io/h2c') return 'HTTP2';
    if (n === 'kubernetes.io/ws') return 'HTTP';
    if (n === 'kubernetes.io/wss') return 'HTTPS';
  }
  if (n.length >= 8 && n.slice(0, 8).toLowerCase() === 'grpc-web') return 'GRPC-WEB';
  const dash = n.indexOf('-');
  const prefix = (dash >= 0 ? n.slice(0, dash) : n).toLowerCase();
  const p = Object.hasOwn(PROTOCOL_NAMES, prefix) ? PROTOCOL_NAMES[prefix]! : '';
  if (p === '' && WELL_KNOWN_TCP_PORTS.has(port)) return 'TCP';
  return p;
}

/** `networking.istio.io/exportTo` as a list (unset: undefined, the mesh default). */
function exportToOf(svc: Resource<KubeServiceDocument>): string[] | undefined {
  const raw = svc.metadata.annotations?.[EXPORT_TO_ANNOTATION];
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** A Pod's named TCP container ports (first wins, as Kubernetes resolves them), native sidecars' too. */
function podPortMap(pod: Resource<KubePodDocument>): Map<string, number> {
  const out = new Map<string, number>();
  const add = (ports: readonly KubeContainerPort[] | undefined): void => {
    for (const p of ports ?? []) {
      if (!p.name || (p.protocol ?? 'TCP').toUpperCase() !== 'TCP' || out.has(p.name)) continue;
      out.set(p.name, p.containerPort);
    }
  };
  for (const c of pod.spec.spec?.containers ?? []) add(c.ports);
  for (const c of pod.spec.spec?.initContainers ?? []) if (c.restartPolicy === 'Always') add(c.ports);
  return out;
}

function podReady(pod: Resource<KubePodDocument>): boolean {
  return (pod.spec.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** Istio's locality: the Pod's `istio-locality` label (dots as slashes), else the slice's zone. */
function localityOf(pod: Resource<KubePodDocument> | undefined, zone: string | undefined): string | undefined {
  const label = pod?.metadata.labels?.[LOCALITY_LABEL];
  if (label) return label.replaceAll('.', '/');
  return zone ? `/${zone}` : undefined;
}

/** The Kubernetes objects of one resolve(), indexed. */
interface KubeIndex {
  podsByName: Map<string, Resource<KubePodDocument>>;
  /** Ready pods by `namespace/ip`: an endpoint without targetRef is matched to one (Istio's best guess). */
  podsByIp: Map<string, Resource<KubePodDocument>>;
  slicesByService: Map<string, Array<Resource<KubeEndpointSliceDocument>>>;
}

function indexKubernetes({ config }: BuildInputs): KubeIndex {
  const podsByName = new Map<string, Resource<KubePodDocument>>();
  const podsByIp = new Map<string, Resource<KubePodDocument>>();
  for (const pod of config.pods) {
    const ns = pod.metadata.namespace;
    podsByName.set(`${ns}/${pod.metadata.name}`, pod);
    if (!podReady(pod)) continue;
    const ips = new Set([pod.spec.status?.podIP, ...(pod.spec.status?.podIPs ?? []).map((p) => p.ip)]);
    for (const ip of ips) if (ip && !podsByIp.has(`${ns}/${ip}`)) podsByIp.set(`${ns}/${ip}`, pod);
  }
  const slicesByService = new Map<string, Array<Resource<KubeEndpointSliceDocument>>>();
  for (const slice of config.endpointSlices) {
    const labels = slice.metadata.labels ?? {};
    const svc = labels[SERVICE_NAME_LABEL];
    if (!svc || labels[MCS_SERVICE_NAME_LABEL] !== undefined) continue;
    const key = `${slice.metadata.namespace}/${svc}`;
    const list = slicesByService.get(key);
    if (list) list.push(slice);
    else slicesByService.set(key, [slice]);
  }
  return { podsByName, podsByIp, slicesByService };
}

/** The target of a Service port: a number, or a container port name (Istio's findServiceTargetPort). */
function targetOf(p: KubeServicePort): { num: number; name: string; explicitName: boolean } {
  if (typeof p.targetPort === 'string') return { num: 0, name: p.targetPort, explicitName: true };
  return { num: p.targetPort !== undefined && p.targetPort > 0 ? p.targetPort : p.port, name: p.name ?? '', explicitName: false };
}

/** Every Kubernetes Service as a registry service, in config order (Istio: creation order). */
export function kubernetesServices(inputs: BuildInputs): RegistryService[] {
  const { config, warnings, domain } = inputs;
  if (config.services.length === 0) return [];
  const index = indexKubernetes(inputs);
  const out: RegistryService[] = [];
  for (const svc of config.services) {
    const spec = svc.spec.spec ?? {};
    const ns = svc.metadata.namespace;
    const name = svc.metadata.name;
    const kubePorts = spec.ports ?? [];
    const ports: ServicePort[] = [];
    const targets = new Map<string, ReturnType<typeof targetOf>>();
    for (const p of kubePorts) {
      const protocol = convertProtocol(p.port, p.name, p.protocol, p.appProtocol);
      // Istio builds no cluster for a UDP port (its proxies do not carry UDP).
      if (protocol === 'UDP') continue;
      const t = targetOf(p);
      ports.push({ number: p.port, name: p.name ?? '', protocol, ...(t.num > 0 ? { targetPort: t.num } : {}) });
      targets.set(p.name ?? '', t);
    }
    const base = { host: serviceHost(name, ns, domain), namespace: ns, ports, exportTo: exportToOf(svc), source: svc as Resource, origin: 'kubernetes' as const };
    if (spec.type === 'ExternalName') {
      const target = (spec.externalName ?? '').toLowerCase().replace(/\.$/, '');
      // Kubernetes requires externalName for this type; without it the Service declares nothing.
      if (target === '') continue;
      out.push({ ...base, endpoints: [], resolution: 'STATIC', aliasFor: target });
      continue;
    }
    if (spec.internalTrafficPolicy === 'Local') {
      warnings.warnOnce(svc, ['spec', 'internalTrafficPolicy'], 'internalTrafficPolicy Local (node-local endpoints) is not implemented by Gatehouse; every ready endpoint of the Service serves');
    }
    if (spec.trafficDistribution) {
      warnings.warnOnce(svc, ['spec', 'trafficDistribution'], `trafficDistribution ${spec.trafficDistribution} asks for locality-aware routing, which Gatehouse does not implement yet; endpoints are used whatever their zone`);
    }
    const endpoints = sliceEndpoints(inputs, index, svc, kubePorts, targets);
    const selector = spec.selector ?? {};
    if (spec.clusterIP !== 'None' && Object.keys(selector).length > 0) endpoints.push(...selectedWorkloadEntries(config.workloadEntries, ns, selector, kubePorts));
    out.push({ ...base, endpoints, resolution: 'STATIC' });
  }
  return out;
}

/** The ready endpoints of a Service's EndpointSlices, one per address (its service ports by name). */
function sliceEndpoints(
  { warnings }: BuildInputs,
  index: KubeIndex,
  svc: Resource<KubeServiceDocument>,
  kubePorts: readonly KubeServicePort[],
  targets: ReadonlyMap<string, ReturnType<typeof targetOf>>,
): ServiceEndpoint[] {
  const ns = svc.metadata.namespace;
  const slices = index.slicesByService.get(`${ns}/${svc.metadata.name}`) ?? [];
  const byAddress = new Map<string, ServiceEndpoint & { ports: Record<string, number> }>();
  for (const slice of slices) {
    const doc = slice.spec;
    if (doc.addressType === 'FQDN') {
      // Istio does not read FQDN slices either (istio#34995).
      warnings.warnOnce(slice, ['addressType'], 'EndpointSlices of addressType FQDN are not supported (by Istio either); its endpoints are ignored');
      continue;
    }
    for (const e of doc.endpoints ?? []) {
      // Ready unless said otherwise; not ready covers terminating endpoints too.
      if (e.conditions?.ready === false) continue;
      for (const address of e.addresses ?? []) {
        const ref = e.targetRef;
        const expectsPod = ref?.kind === 'Pod';
        const pod = expectsPod ? index.podsByName.get(`${ref.namespace ?? ns}/${ref.name ?? ''}`) : index.podsByIp.get(`${ns}/${address}`);
        // Its Pod is not known yet (events arrive in any order): Istio waits for it.
        if (expectsPod && !pod) continue;
        let ep = byAddress.get(address);
        for (const sp of doc.ports ?? []) {
          const portName = sp.name ?? '';
          if (ep?.ports[portName] !== undefined) continue;
          let port = sp.port ?? 0;
          if (port === 0) {
            // A slice port without a number: the Service's target, by number or by the Pod's port name.
            const t = targets.get(portName);
            port = t ? (t.explicitName ? (pod ? (podPortMap(pod).get(t.name) ?? 0) : 0) : t.num) : 0;
            if (port === 0) continue;
          }
          if (!kubePorts.some((p) => (p.name ?? '') === portName)) continue;
          if (!ep) {
            const locality = localityOf(pod, e.zone);
            ep = {
              address,
              ports: {},
              labels: pod?.metadata.labels ?? {},
              ...(locality ? { locality } : {}),
              workload: pod?.metadata.name ?? slice.metadata.name,
              workloadNamespace: pod?.metadata.namespace ?? ns,
              strictPorts: true,
            };
            byAddress.set(address, ep);
          }
          ep.ports[portName] = port;
        }
      }
    }
  }
  return [...byAddress.values()];
}

/** WorkloadEntries of the namespace the Service selects, on its target ports (Istio's serviceInstanceFromWorkloadInstance). */
function selectedWorkloadEntries(workloadEntries: ReadonlyArray<Resource<WorkloadEntrySpec>>, ns: string, selector: Record<string, string>, kubePorts: readonly KubeServicePort[]): ServiceEndpoint[] {
  const out: ServiceEndpoint[] = [];
  for (const we of workloadEntries) {
    if (we.metadata.namespace !== ns) continue;
    const labels = { ...(we.metadata.labels ?? {}), ...(we.spec.labels ?? {}) };
    if (!labelsMatch(selector, labels)) continue;
    // Kubernetes Services take IP workloads only (a hostname or a Unix socket is for ServiceEntries).
    if (!we.spec.address || !/^[0-9a-fA-F:.]+$/.test(we.spec.address)) continue;
    const ports: Record<string, number> = {};
    for (const p of kubePorts) {
      const t = targetOf(p);
      const named = t.name !== '' ? we.spec.ports?.[t.name] : undefined;
      if (named !== undefined) ports[p.name ?? ''] = named;
      else if (!t.explicitName) ports[p.name ?? ''] = t.num;
    }
    const { ports: _own, ...rest } = we.spec;
    out.push({ ...rest, labels, ports, workload: we.metadata.name, workloadNamespace: ns, strictPorts: true });
  }
  return out;
}
