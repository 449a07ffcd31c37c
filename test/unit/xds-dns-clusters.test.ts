// DNS clusters on the wire, as Envoy requires and istiod sends them: STRICT_DNS / LOGICAL_DNS
// clusters carry their endpoints inline (`load_assignment`), EDS carries only EDS clusters'.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { decodeSnapshotResource } from '../../src/controlplane/xds/codec.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE } from '../../src/controlplane/xds/protos.js';
import { SnapshotViews } from '../../src/controlplane/xds/snapshot-views.js';

const YAML = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: a.backend.test, ports: {http: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: default}
spec:
  hosts: [static.internal.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1, ports: {http: 8080}}]
`;

describe('xDS: DNS clusters carry their endpoints inline', () => {
  const { resources } = parseYamlText(YAML, 'c.yaml');
  const snapshot = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '127.0.0.1', mesh: DEFAULT_MESH_CONFIG });
  const views = new SnapshotViews(() => undefined);
  views.update(snapshot);
  const dnsName = 'outbound|80||api.external.test';
  const edsName = 'outbound|80||static.internal.test';

  for (const kind of ['envoy', 'gatehouse'] as const) {
    it(`${kind} view: the STRICT_DNS cluster has load_assignment with the host name; EDS lists only the EDS cluster`, () => {
      const view = views.view({ id: kind === 'envoy' ? 'sidecar~10.0.0.9~x.default~default.svc.cluster.local' : 'router~127.0.0.1~gw.istio-system~x', kind, metadata: {}, userAgent: '' });
      const clusters = view.resources.get(CLUSTER_TYPE)!;
      const dns = decodeSnapshotResource(CLUSTER_TYPE, clusters.get(dnsName)!) as { type: string; load_assignment?: { endpoints: Array<{ lb_endpoints: Array<{ endpoint: { address: { socket_address: { address: string; port_value: number } } } }> }> } };
      expect(dns.type).toBe('STRICT_DNS');
      expect(dns.load_assignment?.endpoints[0]?.lb_endpoints[0]?.endpoint.address.socket_address).toEqual({ address: 'a.backend.test', port_value: 8080 });
      const eds = decodeSnapshotResource(CLUSTER_TYPE, clusters.get(edsName)!) as { load_assignment?: unknown };
      expect(eds.load_assignment).toBeUndefined();
      const endpoints = view.resources.get(ENDPOINT_TYPE)!;
      expect(endpoints.has(edsName)).toBe(true);
      expect(endpoints.has(dnsName)).toBe(false);
    });
  }
});
