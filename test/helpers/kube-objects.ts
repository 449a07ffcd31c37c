// Builders for the Kubernetes objects of the service registry (Service, EndpointSlice, Pod), as
// the API server and its controllers would hold them: a Service with its ports, the EndpointSlice
// controller's slices (label `kubernetes.io/service-name`, resolved ports, endpoint conditions,
// targetRef to the Pod), running Pods with their labels and container ports.
import type { KObj } from './kube-apiserver.js';

export interface ServicePortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
  appProtocol?: string;
}

export function kService(name: string, ports: ServicePortSpec[], opts: { namespace?: string; selector?: Record<string, string> | null; clusterIP?: string; type?: string; externalName?: string; annotations?: Record<string, string> } = {}): KObj {
  const spec: KObj = {
    type: opts.type ?? 'ClusterIP',
    ports: ports.map((p) => ({ protocol: 'TCP', targetPort: p.port, ...p })),
  };
  if (opts.selector !== null) spec.selector = opts.selector ?? { app: name };
  if (opts.type === 'ExternalName') {
    spec.externalName = opts.externalName;
    delete spec.selector;
  } else spec.clusterIP = opts.clusterIP ?? '10.96.0.10';
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: opts.namespace ?? 'default', ...(opts.annotations ? { annotations: opts.annotations } : {}) }, spec };
}

export interface EndpointSpec {
  ip: string;
  /** The Pod it targets (targetRef); null: no targetRef. Default: `pod`. */
  pod?: string | null;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zone?: string;
  nodeName?: string;
}

/** An EndpointSlice of Service `service`: its endpoints and ports (name → port number). */
export function kSlice(name: string, service: string, endpoints: EndpointSpec[], ports: Array<{ name?: string; port?: number; appProtocol?: string }>, opts: { namespace?: string; addressType?: string } = {}): KObj {
  const ns = opts.namespace ?? 'default';
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
    addressType: opts.addressType ?? 'IPv4',
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
      ...(e.pod === null ? {} : { targetRef: { kind: 'Pod', name: e.pod, namespace: ns } }),
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
    })),
    ports: ports.map((p) => ({ protocol: 'TCP', ...p })),
  };
}

/** A running, ready Pod at `ip` with these labels and named container ports. */
export function kPod(name: string, ip: string, labels: Record<string, string>, opts: { namespace?: string; ports?: Record<string, number>; ready?: boolean } = {}): KObj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: opts.namespace ?? 'default', labels },
    spec: { nodeName: 'node-1', containers: [{ name: 'app', image: 'example/app:1', ports: Object.entries(opts.ports ?? {}).map(([n, p]) => ({ name: n, containerPort: p, protocol: 'TCP' })) }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }] },
  };
}
