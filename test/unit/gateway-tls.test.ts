// HTTPS Gateway servers → listener filter chains and SDS secrets, as istiod builds them, and SNI
// selection as Envoy's server_names matching does it.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { needsNodeTls, tlsChains } from '../../src/ingress/https.js';
import { SniTable } from '../../src/tls/sni.js';

function snap(yaml: string): Snapshot {
  const { resources, problems } = parseYamlText(yaml, '/etc/gw/cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const GATEWAY = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [shop/a.example.com]
    tls: {mode: SIMPLE, serverCertificate: certs/a.crt, privateKey: /abs/a.key, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["*.b.example.com"]
    tls: {mode: MUTUAL, credentialName: b-cred, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/client]}
  - port: {number: 443, name: https-c, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: c-cred}
---
apiVersion: v1
kind: Secret
metadata: {name: b-cred, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: B-CERT, tls.key: B-KEY, ca.crt: B-CA}
---
apiVersion: v1
kind: Secret
metadata: {name: c-cred, namespace: shop}
stringData: {cert: C-CERT, key: C-KEY}
---
apiVersion: v1
kind: Secret
metadata: {name: c-cred-cacert, namespace: shop}
data: {cacert: ${Buffer.from('C-CA').toString('base64')}}
`;

describe('HTTPS servers → filter chains and secrets', () => {
  const s = snap(GATEWAY);
  const l = s.listeners.find((x) => x.address.socket_address.port_value === 443)!;

  it('one filter chain per server, matched by its hosts (without namespace), one route table https.<port>', () => {
    expect(l.filter_chains.map((c) => c.filter_chain_match?.server_names)).toEqual([['a.example.com'], ['*.b.example.com'], ['c.example.com']]);
    for (const c of l.filter_chains) expect(c.filters[0]!.typed_config.rds?.route_config_name).toBe('https.443');
    expect(s.routes.has('https.443')).toBe(true);
  });

  it('files: file-cert:<cert>~<key>, relative paths against the YAML file folder; TLS params from the server', () => {
    const ctx = l.filter_chains[0]!.transport_socket!.typed_config;
    expect(ctx.common_tls_context.tls_certificate_sds_secret_configs[0]!.name).toBe('file-cert:/etc/gw/certs/a.crt~/abs/a.key');
    expect(ctx.common_tls_context.tls_params).toEqual({ tls_minimum_protocol_version: 'TLSv1_2', cipher_suites: ['ECDHE-RSA-AES128-GCM-SHA256'] });
    expect(ctx.require_client_certificate).toBe(false);
    expect(ctx.common_tls_context.combined_validation_context).toBeUndefined();
    expect(s.secrets.get('file-cert:/etc/gw/certs/a.crt~/abs/a.key')!.tls_certificate!.private_key).toEqual({ filename: '/abs/a.key' });
  });

  it('MUTUAL: kubernetes://<name> from the gateway namespace, its CA as <name>-cacert, SANs, client certificate required', () => {
    const ctx = l.filter_chains[1]!.transport_socket!.typed_config;
    expect(ctx.require_client_certificate).toBe(true);
    expect(ctx.common_tls_context.tls_certificate_sds_secret_configs[0]!.name).toBe('kubernetes://b-cred');
    expect(ctx.common_tls_context.combined_validation_context).toEqual({
      default_validation_context: { match_subject_alt_names: [{ exact: 'spiffe://cluster.local/ns/shop/sa/client' }] },
      validation_context_sds_secret_config: { name: 'kubernetes://b-cred-cacert', sds_config: { ads: {}, resource_api_version: 'V3' } },
    });
    expect(s.secrets.get('kubernetes://b-cred')!.tls_certificate!.certificate_chain.inline_string).toBe('B-CERT');
    expect(s.secrets.get('kubernetes://b-cred-cacert')!.validation_context!.trusted_ca.inline_string).toBe('B-CA');
  });

  it('OPTIONAL_MUTUAL: a generic Secret in the Gateway namespace, the CA from <name>-cacert (base64 data)', () => {
    const ctx = l.filter_chains[2]!.transport_socket!.typed_config;
    expect(ctx.require_client_certificate).toBe(false);
    expect(ctx.common_tls_context.tls_certificate_sds_secret_configs[0]!.name).toBe('kubernetes://shop/c-cred');
    expect(s.secrets.get('kubernetes://shop/c-cred')!.tls_certificate!.private_key.inline_string).toBe('C-KEY');
    expect(s.secrets.get('kubernetes://shop/c-cred-cacert')!.validation_context!.trusted_ca.inline_string).toBe('C-CA');
  });

  it('the data plane reads each chain back, and picks node:http2 when a client certificate is asked for', () => {
    const chains = tlsChains(l);
    expect(chains.map((c) => c.mode)).toEqual(['SIMPLE', 'MUTUAL', 'OPTIONAL_MUTUAL']);
    expect(needsNodeTls(chains)).toBe(true);
    // A SIMPLE chain alone is uWS-capable when it offers only http/1.1 (h2 is the default now).
    expect(needsNodeTls([{ ...chains[0]!, alpn: ['http/1.1'] }])).toBe(false);
    expect(needsNodeTls([{ ...chains[0]!, minVersion: 'TLSv1_3' }])).toBe(true);
  });

  it('ALPN: h2 and http/1.1 by default, as Istio; the annotation narrows it to http/1.1 (uWS-capable), bad values warned', () => {
    // Was `[['http/1.1'], ...]` (HTTP/1.1 unless a route reached a gRPC port): h2 is now the default.
    expect(l.filter_chains.map((c) => c.transport_socket!.typed_config.common_tls_context.alpn_protocols)).toEqual([['h2', 'http/1.1'], ['h2', 'http/1.1'], ['h2', 'http/1.1']]);
    expect(needsNodeTls(tlsChains(l).slice(0, 1))).toBe(true);
    const annotated = (v: string): Snapshot => snap(GATEWAY.replace('metadata: {name: gw, namespace: shop}', `metadata: {name: gw, namespace: shop, annotations: {gatehouse.io/alpn: "${v}"}}`));
    const h1 = annotated('http/1.1');
    const l1 = h1.listeners.find((x) => x.address.socket_address.port_value === 443)!;
    expect(tlsChains(l1).map((c) => c.alpn)).toEqual([['http/1.1'], ['http/1.1'], ['http/1.1']]);
    expect(needsNodeTls(tlsChains(l1).slice(0, 1))).toBe(false);
    const h2 = annotated('h2, http/1.1');
    expect(tlsChains(h2.listeners.find((x) => x.address.socket_address.port_value === 443)!).map((c) => c.alpn)).toEqual([['h2', 'http/1.1'], ['h2', 'http/1.1'], ['h2', 'http/1.1']]);
    const bad = annotated('spdy/3');
    expect(bad.warnings.map((w) => `${w.line}: ${w.message}`).join('\n')).toMatch(/^\d+: gatehouse.io\/alpn must be "h2,http\/1.1" or "http\/1.1", not "spdy\/3"; ignored \(h2 and http\/1.1 are offered\)$/m);
    expect(tlsChains(bad.listeners.find((x) => x.address.socket_address.port_value === 443)!)[0]!.alpn).toEqual(['h2', 'http/1.1']);
  });

  it('ALPN: one Gateway without the annotation on the port keeps h2 offered', () => {
    const two = snap(`${GATEWAY.replace('metadata: {name: gw, namespace: shop}', 'metadata: {name: gw, namespace: shop, annotations: {gatehouse.io/alpn: "http/1.1"}}')}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw2, namespace: shop}
spec:
  servers:
  - port: {number: 443, name: https-d, protocol: HTTPS}
    hosts: [d.example.com]
    tls: {mode: SIMPLE, credentialName: c-cred}
`);
    const l2 = two.listeners.find((x) => x.address.socket_address.port_value === 443)!;
    expect(tlsChains(l2).map((c) => c.alpn[0])).toEqual(['h2', 'h2', 'h2', 'h2']);
  });

  it('ALPN: narrowed to http/1.1 while a route reaches a GRPC service port: warned (gRPC clients need h2)', () => {
    const grpc = snap(`${GATEWAY.replace('metadata: {name: gw, namespace: shop}', 'metadata: {name: gw, namespace: shop, annotations: {gatehouse.io/alpn: "http/1.1"}}')}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: shop}
spec: {hosts: [echo.shop.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 50051, name: grpc, protocol: GRPC}], endpoints: [{address: 127.0.0.1}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: shop}
spec: {hosts: [a.example.com], gateways: [gw], http: [{route: [{destination: {host: echo}}]}]}
`);
    const l2 = grpc.listeners.find((x) => x.address.socket_address.port_value === 443)!;
    expect(tlsChains(l2)[0]!.alpn).toEqual(['http/1.1']);
    expect(grpc.warnings.map((w) => w.message)).toContain('port 443 offers only http/1.1 (gatehouse.io/alpn) but routes to an HTTP2/GRPC service port: gRPC clients, which need h2, cannot be served on it');
  });

  it('a changed Secret changes the snapshot hash (new certificates are applied)', () => {
    expect(snap(GATEWAY.replace('B-CERT', 'B-CERT-2')).hash).not.toBe(s.hash);
  });

  it('a server whose Secret is missing is not served; unsupported modes warn', () => {
    const s2 = snap(GATEWAY.replace('credentialName: b-cred', 'credentialName: nope').replace('mode: OPTIONAL_MUTUAL, credentialName: c-cred', 'mode: PASSTHROUGH'));
    const l2 = s2.listeners.find((x) => x.address.socket_address.port_value === 443)!;
    expect(l2.filter_chains).toHaveLength(1);
    expect(s2.warnings.map((w) => w.message).join('\n')).toContain('tls mode PASSTHROUGH on an HTTPS server is not supported');
  });

  it('an ACME Gateway: the SIMPLE servers get an acme:// secret for their hosts', () => {
    const acme = snap(
      GATEWAY.replace('metadata: {name: gw, namespace: shop}', 'metadata: {name: gw, namespace: shop, annotations: {gatehouse.io/acme-directory: "https://acme.test/dir", gatehouse.io/acme-email: a@b.c}}').replace(
        'tls: {mode: SIMPLE, serverCertificate: certs/a.crt, privateKey: /abs/a.key, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}',
        'tls: {mode: SIMPLE, credentialName: a-cert}',
      ),
    );
    expect(acme.secrets.get('acme://shop/a-cert')).toEqual({ name: 'acme://shop/a-cert', acme: { directory_url: 'https://acme.test/dir', email: 'a@b.c', hosts: ['a.example.com'] } });
  });
});

describe('SNI selection (Envoy server_names)', () => {
  const t = new SniTable([
    { names: ['a.test'], value: 'a' },
    { names: ['*.wild.test'], value: 'wild' },
    { names: ['*.x.wild.test'], value: 'x-wild' },
    { names: ['exact.x.wild.test'], value: 'exact' },
  ]);

  it('exact names first, then the most specific wildcard, over any number of labels', () => {
    expect(t.match('a.test')).toBe('a');
    expect(t.match('A.TEST')).toBe('a');
    expect(t.match('exact.x.wild.test')).toBe('exact');
    expect(t.match('y.x.wild.test')).toBe('x-wild');
    expect(t.match('z.y.wild.test')).toBe('wild');
    expect(t.match('wild.test')).toBeUndefined();
  });

  it('no SNI or no match: the catch-all server, else the first (the default certificate)', () => {
    expect(t.match(undefined)).toBeUndefined();
    expect(t.fallback).toBe('a');
    const withCatchAll = new SniTable([{ names: ['a.test'], value: 'a' }, { names: null, value: 'any' }]);
    expect(withCatchAll.match('other.test')).toBe('any');
    expect(withCatchAll.match(undefined)).toBe('any');
    expect(withCatchAll.fallback).toBe('any');
  });
});
