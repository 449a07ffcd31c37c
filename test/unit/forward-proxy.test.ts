// The forward proxy's policy: CONNECT targets against the registry, and which outbound traffic
// policy applies to the gateway (its Sidecar, the namespace default, the root namespace's, the
// mesh config), as resolve() writes it into the listener.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG, type MeshConfig } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { ForwardProxyConfig } from '../../src/controlplane/snapshot.js';
import { decideConnect, parseConnectTarget } from '../../src/egress/forward-proxy.js';

describe('CONNECT targets', () => {
  it('parses host:port, IPv6 in brackets, and refuses the rest', () => {
    expect(parseConnectTarget('api.example.com:443')).toEqual({ host: 'api.example.com', port: 443 });
    expect(parseConnectTarget('[::1]:8443')).toEqual({ host: '::1', port: 8443 });
    for (const bad of ['api.example.com', 'api.example.com:0', 'a:99999', 'http://x:1', 'a b:1', '']) expect(parseConnectTarget(bad)).toBeUndefined();
  });

  const cfg: ForwardProxyConfig = { policy: 'REGISTRY_ONLY', connect: [{ host: 'api.example.com', ports: [443] }, { host: '*.example.com', ports: [8443] }] };

  it('a registered host on a declared port goes to its cluster; the exact host wins over a wildcard', () => {
    expect(decideConnect(cfg, { host: 'api.example.com', port: 443 })).toEqual({ kind: 'cluster', cluster: 'outbound|443||api.example.com', host: 'api.example.com', port: 443 });
    expect(decideConnect(cfg, { host: 'db.example.com', port: 8443 })).toMatchObject({ kind: 'cluster', cluster: 'outbound|8443||*.example.com' });
  });

  it('the longest matching wildcard wins whatever the config order; an exact host listed last still wins', () => {
    const c: ForwardProxyConfig = {
      policy: 'REGISTRY_ONLY',
      connect: [
        { host: '*.com', ports: [1] },
        { host: '*.example.com', ports: [2] },
        { host: '*.eu.example.com', ports: [3] },
        { host: 'db.eu.example.com', ports: [4] },
      ],
    };
    expect(decideConnect(c, { host: 'x.eu.example.com', port: 3 })).toMatchObject({ kind: 'cluster', cluster: 'outbound|3||*.eu.example.com' });
    expect(decideConnect(c, { host: 'x.example.com', port: 2 })).toMatchObject({ kind: 'cluster', cluster: 'outbound|2||*.example.com' });
    expect(decideConnect(c, { host: 'other.com', port: 1 })).toMatchObject({ kind: 'cluster', cluster: 'outbound|1||*.com' });
    expect(decideConnect(c, { host: 'db.eu.example.com', port: 4 })).toMatchObject({ kind: 'cluster', cluster: 'outbound|4||db.eu.example.com' });
    // Asked again (compiled form reused): the same answers.
    expect(decideConnect(c, { host: 'x.eu.example.com', port: 2 })).toMatchObject({ kind: 'refuse', status: 403 });
  });

  it('an undeclared port is 403; an unknown host is 502 under REGISTRY_ONLY and passes under ALLOW_ANY', () => {
    expect(decideConnect(cfg, { host: 'api.example.com', port: 8443 })).toMatchObject({ kind: 'refuse', status: 403 });
    expect(decideConnect(cfg, { host: 'other.test', port: 443 })).toMatchObject({ kind: 'refuse', status: 502 });
    expect(decideConnect({ ...cfg, policy: 'ALLOW_ANY' }, { host: 'other.test', port: 443 })).toEqual({ kind: 'passthrough', host: 'other.test', port: 443 });
  });
});

describe('outbound traffic policy of a forward-proxy gateway', () => {
  const base = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system, annotations: {gatehouse.io/forward-proxy: "true"}}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`;
  const sidecar = (ns: string, mode: string, selector = ''): string => `
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc-${mode.toLowerCase().replace("_", "-")}${selector ? "-sel" : ""}, namespace: ${ns}}
spec:
  ${selector ? `workloadSelector: {labels: {istio: egressgateway}}\n  ` : ''}outboundTrafficPolicy: {mode: ${mode}}
`;
  const policy = (yaml: string, mesh: MeshConfig = DEFAULT_MESH_CONFIG): string | undefined => {
    const { resources, problems } = parseYamlText(yaml, '/etc/gw/egress.yaml');
    expect(problems).toEqual([]);
    const s = resolve(resources, { labels: { istio: 'egressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh });
    return s.listeners[0]!.metadata.filter_metadata.istio.forward_proxy?.policy;
  };

  it('mesh config, then the root namespace Sidecar, then the namespace default, then a Sidecar selecting the gateway', () => {
    expect(policy(base)).toBe('ALLOW_ANY');
    expect(policy(base, { ...DEFAULT_MESH_CONFIG, outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } })).toBe('REGISTRY_ONLY');
    expect(policy(base + sidecar('istio-system', 'REGISTRY_ONLY'))).toBe('REGISTRY_ONLY');
    expect(policy(base + sidecar('istio-system', 'REGISTRY_ONLY') + sidecar('istio-system', 'ALLOW_ANY', 'sel'))).toBe('ALLOW_ANY');
  });

  it('the catch-all goes to BlackHoleCluster or PassthroughCluster, which the snapshot then has', () => {
    const { resources } = parseYamlText(base, '/etc/gw/egress.yaml');
    const s = resolve(resources, { labels: { istio: 'egressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: { ...DEFAULT_MESH_CONFIG, outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } } });
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.domains.includes('*'))!;
    expect(vh.routes[0]!.route!.cluster).toBe('BlackHoleCluster');
    expect(s.clusters.get('BlackHoleCluster')?.metadata.filter_metadata.istio.kind).toBe('blackhole');
    expect(s.clusters.get('PassthroughCluster')?.type).toBe('ORIGINAL_DST');
  });
});
