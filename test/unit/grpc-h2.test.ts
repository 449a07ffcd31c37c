// gRPC semantics and HTTP/2 / TLS origination translation, as pure functions: grpc-timeout
// parsing, Envoy's HTTP → gRPC status mapping, grpc-message encoding, SAN matching, and what
// resolve() writes on clusters for GRPC / HTTP2 ports and DestinationRule tls.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { grpcMessageEncode, grpcTimeoutMs, httpToGrpcStatus } from '../../src/ingress/exchange.js';
import { matchSubjectAltNames, sniOf } from '../../src/upstream/tls-origination.js';

describe('grpc-timeout', () => {
  it('reads every unit, in milliseconds (sub-millisecond rounds up to 1)', () => {
    expect(grpcTimeoutMs('1H')).toBe(3_600_000);
    expect(grpcTimeoutMs('2M')).toBe(120_000);
    expect(grpcTimeoutMs('3S')).toBe(3000);
    expect(grpcTimeoutMs('250m')).toBe(250);
    expect(grpcTimeoutMs('1500u')).toBe(2);
    expect(grpcTimeoutMs('10n')).toBe(1);
  });
  it('ignores malformed values (too many digits, unknown unit, no digits)', () => {
    expect(grpcTimeoutMs(undefined)).toBe(0);
    expect(grpcTimeoutMs('123456789S')).toBe(0);
    expect(grpcTimeoutMs('10x')).toBe(0);
    expect(grpcTimeoutMs('S')).toBe(0);
    expect(grpcTimeoutMs('-1S')).toBe(0);
  });
});

describe("Envoy's HTTP to gRPC status mapping for local replies", () => {
  it('maps as grpc/doc/http-grpc-status-mapping.md', () => {
    expect(httpToGrpcStatus(400)).toBe(13);
    expect(httpToGrpcStatus(401)).toBe(16);
    expect(httpToGrpcStatus(403)).toBe(7);
    expect(httpToGrpcStatus(404)).toBe(12);
    for (const s of [429, 502, 503, 504]) expect(httpToGrpcStatus(s)).toBe(14);
    expect(httpToGrpcStatus(500)).toBe(2);
  });
  it('percent-encodes grpc-message outside printable ASCII, and %', () => {
    expect(grpcMessageEncode('no healthy upstream')).toBe('no healthy upstream');
    expect(grpcMessageEncode('100% ü\n')).toBe('100%25 %C3%BC%0A');
  });
});

describe('TLS origination helpers', () => {
  it('matches subjectAltNames exactly (URI, DNS, IP) and DNS wildcards for one label', () => {
    const cert = { subjectaltname: 'DNS:*.svc.test, URI:spiffe://cluster.local/ns/a/sa/b, IP Address:10.0.0.1' } as never;
    expect(matchSubjectAltNames(cert, ['spiffe://cluster.local/ns/a/sa/b'])).toBeUndefined();
    expect(matchSubjectAltNames(cert, ['10.0.0.1'])).toBeUndefined();
    expect(matchSubjectAltNames(cert, ['x.svc.test'])).toBeUndefined();
    expect(matchSubjectAltNames(cert, ['a.b.svc.test'])).toBeInstanceOf(Error);
    expect(matchSubjectAltNames(cert, ['spiffe://cluster.local/ns/a/sa/c'])).toBeInstanceOf(Error);
  });
  it('takes the SNI from the request host: port removed, none for IP literals', () => {
    expect(sniOf('API.example.com:8443')).toBe('api.example.com');
    expect(sniOf('10.1.2.3:443')).toBe('');
    expect(sniOf('[::1]:443')).toBe('');
  });
});

const CONFIG = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 50051, name: grpc, protocol: GRPC}
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 8081, name: h2, protocol: HTTP2}
  - {number: 8082, name: web, protocol: GRPC-WEB}
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: multi, namespace: default}
spec:
  host: multi
  trafficPolicy:
    connectionPool: {http: {maxConcurrentStreams: 50}}
    tls: {mode: SIMPLE, caCertificates: certs/ca.pem, sni: backend.test, subjectAltNames: [backend.test]}
  subsets:
  - name: up
    labels: {v: up}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
      tls: {mode: MUTUAL, clientCertificate: /abs/client.pem, privateKey: key.pem}
`;

describe('resolve: HTTP/2 upstreams and DestinationRule tls', () => {
  const { resources } = parseYamlText(CONFIG, '/etc/gh/cfg.yaml');
  const s = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
  const c = (name: string) => s.clusters.get(name)!;

  it('marks GRPC, GRPC-WEB and HTTP2 service ports as HTTP/2, with maxConcurrentStreams', () => {
    expect(c('outbound|50051||multi.default.svc.cluster.local').http2_protocol_options).toEqual({ max_concurrent_streams: 50 });
    expect(c('outbound|8081||multi.default.svc.cluster.local').http2_protocol_options).toBeDefined();
    expect(c('outbound|8082||multi.default.svc.cluster.local').http2_protocol_options).toBeDefined();
    expect(c('outbound|8080||multi.default.svc.cluster.local').http2_protocol_options).toBeUndefined();
  });

  it('upgrades an HTTP port to HTTP/2 with h2UpgradePolicy UPGRADE', () => {
    expect(c('outbound|8080|up|multi.default.svc.cluster.local').http2_protocol_options).toBeDefined();
  });

  it('writes the TLS transport socket with paths relative to the YAML file', () => {
    const tls = c('outbound|8080||multi.default.svc.cluster.local').transport_socket!.typed_config;
    expect(tls.sni).toBe('backend.test');
    expect(tls.common_tls_context.validation_context).toEqual({ trusted_ca: { filename: '/etc/gh/certs/ca.pem' }, match_subject_alt_names: [{ exact: 'backend.test' }] });
    const mtls = c('outbound|8080|up|multi.default.svc.cluster.local').transport_socket!.typed_config;
    expect(mtls.common_tls_context.tls_certificates).toEqual([{ certificate_chain: { filename: '/abs/client.pem' }, private_key: { filename: '/etc/gh/key.pem' } }]);
  });

  it('reports unreadable files once per field, at the field of the rule that names them', () => {
    const msgs = s.warnings.map((w) => `${w.path}: ${w.message}`);
    expect(msgs.filter((m) => m.startsWith('spec.trafficPolicy.tls.caCertificates: cannot read /etc/gh/certs/ca.pem'))).toHaveLength(1);
    expect(msgs.some((m) => m.startsWith('spec.subsets[0].trafficPolicy.tls.clientCertificate: cannot read /abs/client.pem'))).toBe(true);
    expect(msgs.some((m) => /not implemented/.test(m) && m.includes('tls'))).toBe(false);
  });
});
