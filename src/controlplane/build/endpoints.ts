// Registry endpoints → Envoy's ClusterLoadAssignment of one cluster: the endpoints a subset's
// labels select, grouped by locality, on the port their workload declares for the service port.
import type { ClusterLoadAssignment, LbEndpoint } from '../snapshot.js';
import type { RegistryService, ServicePort } from './registry.js';
import { labelsMatch } from './visibility.js';

export function buildLoadAssignment(name: string, svc: RegistryService, port: ServicePort, subsetLabels: Record<string, string>): ClusterLoadAssignment {
  const byLocality = new Map<string, LbEndpoint[]>();
  for (const ep of svc.endpoints) {
    const labels = ep.labels ?? {};
    if (!labelsMatch(subsetLabels, labels)) continue;
    if (!ep.address) continue;
    const named = ep.ports?.[port.name];
    if (named === undefined && ep.strictPorts) continue;
    const epPort = named ?? port.targetPort ?? port.number;
    const locality = ep.locality ?? '';
    const list = byLocality.get(locality) ?? [];
    list.push({
      endpoint: { address: { socket_address: { address: ep.address, port_value: epPort } } },
      health_status: 'HEALTHY',
      load_balancing_weight: ep.weight ?? 1,
      metadata: { filter_metadata: { istio: { labels, workload: ep.workload, namespace: ep.workloadNamespace } } },
    });
    byLocality.set(locality, list);
  }
  return {
    cluster_name: name,
    endpoints: [...byLocality].map(([locality, lb_endpoints]) => {
      const [region = '', zone = '', sub_zone = ''] = locality.split('/');
      return { locality: { region, zone, sub_zone }, lb_endpoints, load_balancing_weight: lb_endpoints.reduce((a, e) => a + e.load_balancing_weight, 0), priority: 0 };
    }),
  };
}
