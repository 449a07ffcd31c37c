// Builders for the Istio resources the integration tests use. Each returns a plain object;
// `yamlDocs` turns them into one multi-document YAML file.
import { stringify } from 'yaml';

export type Obj = Record<string, unknown>;

const API = 'networking.istio.io/v1';

export function yamlDocs(...docs: Obj[]): string {
  return docs.map((d) => stringify(d)).join('---\n');
}

/** A Gateway selecting the test gateway (`istio: ingressgateway`) with one HTTP server. */
export function gateway(name: string, port: number, hosts: string[] = ['*'], opts: { namespace?: string; servers?: Obj[] } = {}): Obj {
  return {
    apiVersion: API,
    kind: 'Gateway',
    metadata: { name, namespace: opts.namespace ?? 'default' },
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [{ port: { number: port, name: `http-${port}`, protocol: 'HTTP' }, hosts }, ...(opts.servers ?? [])],
    },
  };
}

export function virtualService(name: string, hosts: string[], http: Obj[], opts: { namespace?: string; gateways?: string[] } = {}): Obj {
  return {
    apiVersion: API,
    kind: 'VirtualService',
    metadata: { name, namespace: opts.namespace ?? 'default' },
    spec: { hosts, gateways: opts.gateways ?? ['gw'], http },
  };
}

/** A `route` destination entry. */
export function dest(host: string, subset?: string, weight?: number, extra: Obj = {}): Obj {
  return { destination: { host, ...(subset ? { subset } : {}) }, ...(weight !== undefined ? { weight } : {}), ...extra };
}

export function destinationRule(name: string, host: string, subsets: Record<string, Record<string, string>>, opts: { namespace?: string; trafficPolicy?: Obj } = {}): Obj {
  return {
    apiVersion: API,
    kind: 'DestinationRule',
    metadata: { name, namespace: opts.namespace ?? 'default' },
    spec: {
      host,
      ...(opts.trafficPolicy ? { trafficPolicy: opts.trafficPolicy } : {}),
      subsets: Object.entries(subsets).map(([n, labels]) => ({ name: n, labels })),
    },
  };
}

/** A MESH_INTERNAL STATIC ServiceEntry with one HTTP port, its endpoints from WorkloadEntries (`app: <name>`) or inline. */
export function serviceEntry(name: string, host: string, port: number, opts: { namespace?: string; endpoints?: Obj[]; selectApp?: string } = {}): Obj {
  return {
    apiVersion: API,
    kind: 'ServiceEntry',
    metadata: { name, namespace: opts.namespace ?? 'default' },
    spec: {
      hosts: [host],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: port, name: 'http', protocol: 'HTTP' }],
      ...(opts.endpoints ? { endpoints: opts.endpoints } : { workloadSelector: { labels: { app: opts.selectApp ?? name } } }),
    },
  };
}

export function workloadEntry(name: string, labels: Record<string, string>, port: number, opts: { namespace?: string; address?: string } = {}): Obj {
  return {
    apiVersion: API,
    kind: 'WorkloadEntry',
    metadata: { name, namespace: opts.namespace ?? 'default', labels },
    spec: { address: opts.address ?? '127.0.0.1', ports: { http: port } },
  };
}

/**
 * A service `<name>.default.svc.cluster.local` (service port `servicePort`) whose workloads are
 * WorkloadEntries labelled `app: <name>, version: <v>`, one per listed port, and a DestinationRule
 * with one subset per version (plus any `extraSubsets`).
 */
export function service(name: string, versions: Record<string, number | number[]>, opts: { servicePort?: number; extraSubsets?: Record<string, Record<string, string>>; trafficPolicy?: Obj } = {}): Obj[] {
  const docs: Obj[] = [serviceEntry(name, `${name}.default.svc.cluster.local`, opts.servicePort ?? 9080)];
  const subsets: Record<string, Record<string, string>> = {};
  for (const [v, ports] of Object.entries(versions)) {
    subsets[v] = { version: v };
    (Array.isArray(ports) ? ports : [ports]).forEach((p, i) => docs.push(workloadEntry(`${name}-${v}-${i}`, { app: name, version: v }, p)));
  }
  docs.push(destinationRule(name, name, { ...subsets, ...(opts.extraSubsets ?? {}) }, opts.trafficPolicy ? { trafficPolicy: opts.trafficPolicy } : {}));
  return docs;
}

export const fqdn = (name: string): string => `${name}.default.svc.cluster.local`;
