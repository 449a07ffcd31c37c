// Gateway TCP / TLS servers → tcp_proxy filter chains, as istiod builds them for a gateway, and
// the warnings `validate` prints for what a gateway cannot honour in L4 routes.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';

const CONFIG = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  servers:
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9001, name: tcp2, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: ["*", a.example.com]
  gateways: [gw]
  tcp:
  - match: [{port: 9000, sourceLabels: {app: x}, destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: db}}]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: db}}]
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: db}}]
`;

describe('L4 gateway servers', () => {
  const { resources, problems } = parseYamlText(CONFIG, '/etc/gw/cfg.yaml');
  const s = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });

  it('a TCP server gets one tcp_proxy chain from the first matching tcp route; no route: BlackHoleCluster', () => {
    expect(problems).toEqual([]);
    const l = (port: number) => s.listeners.find((x) => x.address.socket_address.port_value === port)!;
    expect(l(9000).filter_chains[0]!.filters[0]).toEqual({
      name: 'envoy.filters.network.tcp_proxy',
      typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'outbound|5432||db.default.svc.cluster.local', cluster: 'outbound|5432||db.default.svc.cluster.local', idle_timeout: { seconds: 3600, nanos: 0 } },
    });
    expect(l(9001).filter_chains[0]!.filters[0]!.typed_config).toMatchObject({ cluster: 'BlackHoleCluster' });
    // HTTPS PASSTHROUGH is TLS passthrough, as in Istio.
    expect(l(9443).metadata.filter_metadata.istio.protocol).toBe('TLS');
    expect(l(9443).filter_chains.map((c) => c.filter_chain_match?.server_names)).toEqual([['a.example.com']]);
  });

  it('warns (file:line) about sourceLabels, destinationSubnets and an SNI already routed', () => {
    const w = s.warnings.map((p) => `${p.line}: ${p.path}: ${p.message}`);
    expect(w.some((x) => /spec\.tcp\[0\]\.match\[0\]\.sourceLabels: .*gateway ignores/.test(x))).toBe(true);
    expect(w.some((x) => /spec\.tcp\[0\]\.match\[0\]\.destinationSubnets: .*not supported/.test(x))).toBe(true);
    expect(w.some((x) => /spec\.tls\[1\]\.match\[0\]\.sniHosts: .*already routed/.test(x))).toBe(true);
    expect(s.warnings.every((p) => p.file === '/etc/gw/cfg.yaml' && p.line > 0)).toBe(true);
  });
});
