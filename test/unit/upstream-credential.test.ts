// DestinationRule `tls.credentialName` (TLS origination from a Secret) → the cluster's
// UpstreamTlsContext naming SDS secrets as istiod does (`kubernetes://<name>`, and
// `kubernetes://<name>-cacert` for the CA), the secrets the snapshot carries for them, and the
// warnings for what cannot be served. The Secret is read from the gateway's namespace only, as
// istiod's SDS allows a gateway. Also istiod's key and CA lookup order for Gateway credentials.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { Cluster, Snapshot } from '../../src/controlplane/snapshot.js';

function snap(yaml: string): Snapshot {
  const { resources, problems } = parseYamlText(yaml, '/etc/gw/cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const SDS = (name: string): { name: string; sds_config: { ads: Record<string, never>; resource_api_version: 'V3' } } => ({ name, sds_config: { ads: {}, resource_api_version: 'V3' } });

const SERVICE = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 8443, name: https-alt, protocol: HTTPS}]
  endpoints: [{address: 127.0.0.1, labels: {v: one}}]
`;

function rule(tls: string, extra = ''): string {
  return `${SERVICE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: shop}
spec:
  host: api.example.com
  trafficPolicy:
    tls: ${tls}
${extra}`;
}

const SECRETS = `
---
apiVersion: v1
kind: Secret
metadata: {name: client-credential, namespace: istio-system}
type: Opaque
stringData: {cert: CLIENT-CERT, key: CLIENT-KEY, tls.crt: OTHER-CERT, tls.key: OTHER-KEY, cacert: OWN-CA}
---
apiVersion: v1
kind: Secret
metadata: {name: client-credential-cacert, namespace: istio-system}
stringData: {ca.crt: SEPARATE-CA}
---
apiVersion: v1
kind: Secret
metadata: {name: tls-only, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: TLS-CERT, tls.key: TLS-KEY, ca.crt: TLS-CA}
---
apiVersion: v1
kind: Secret
metadata: {name: no-ca, namespace: istio-system}
stringData: {cert: C, key: K}
---
apiVersion: v1
kind: Secret
metadata: {name: in-shop, namespace: shop}
stringData: {cert: C, key: K, cacert: CA}
`;

const cluster = (s: Snapshot, port = 443, subset = ''): Cluster => s.clusters.get(`outbound|${port}|${subset}|api.example.com`)!;

describe('DestinationRule tls.credentialName → SDS secrets (istiod names)', () => {
  it('SIMPLE: the CA over SDS kubernetes://<name>-cacert, no client certificate; the <name>-cacert Secret wins over the own key, as istiod', () => {
    const s = snap(rule('{mode: SIMPLE, credentialName: client-credential, sni: api.example.com}') + SECRETS);
    const ctx = cluster(s).transport_socket!.typed_config;
    expect(ctx.sni).toBe('api.example.com');
    expect(ctx.common_tls_context.tls_certificate_sds_secret_configs).toBeUndefined();
    expect(ctx.common_tls_context.combined_validation_context).toEqual({ default_validation_context: {}, validation_context_sds_secret_config: SDS('kubernetes://client-credential-cacert') });
    expect(s.secrets.get('kubernetes://client-credential-cacert')).toEqual({ name: 'kubernetes://client-credential-cacert', validation_context: { trusted_ca: { inline_string: 'SEPARATE-CA' } } });
    expect(s.secrets.has('kubernetes://client-credential')).toBe(false);
    expect(s.warnings).toEqual([]);
  });

  it('MUTUAL: the client certificate over SDS kubernetes://<name> (cert/key before tls.crt/tls.key), the CA, and subjectAltNames', () => {
    const s = snap(rule('{mode: MUTUAL, credentialName: client-credential, subjectAltNames: [api.example.com]}') + SECRETS);
    const ctx = cluster(s).transport_socket!.typed_config;
    expect(ctx.common_tls_context.tls_certificate_sds_secret_configs).toEqual([SDS('kubernetes://client-credential')]);
    expect(ctx.common_tls_context.combined_validation_context!.default_validation_context).toEqual({ match_subject_alt_names: [{ exact: 'api.example.com' }] });
    expect(s.secrets.get('kubernetes://client-credential')!.tls_certificate).toEqual({ certificate_chain: { inline_string: 'CLIENT-CERT' }, private_key: { inline_string: 'CLIENT-KEY' } });
  });

  it('a kubernetes.io/tls Secret with its own ca.crt; kubernetes://<name> is the same credential', () => {
    const s = snap(rule('{mode: MUTUAL, credentialName: "kubernetes://tls-only"}') + SECRETS);
    expect(s.secrets.get('kubernetes://tls-only')!.tls_certificate!.certificate_chain.inline_string).toBe('TLS-CERT');
    expect(s.secrets.get('kubernetes://tls-only-cacert')!.validation_context!.trusted_ca.inline_string).toBe('TLS-CA');
  });

  it('insecureSkipVerify (MUTUAL): the certificate only, no CA is named', () => {
    const s = snap(rule('{mode: MUTUAL, credentialName: no-ca, insecureSkipVerify: true}') + SECRETS);
    const ctx = cluster(s).transport_socket!.typed_config;
    expect(ctx.insecure_skip_verify).toBe(true);
    expect(ctx.common_tls_context.combined_validation_context).toBeUndefined();
    expect(s.warnings).toEqual([]);
  });

  it('portLevelSettings and subsets get their own credential', () => {
    const s = snap(
      rule(
        '{mode: SIMPLE, credentialName: tls-only}',
        `    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: MUTUAL, credentialName: client-credential}
  subsets:
  - name: one
    labels: {v: one}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: tls-only}
`,
      ) + SECRETS,
    );
    expect(cluster(s).transport_socket!.typed_config.common_tls_context.combined_validation_context!.validation_context_sds_secret_config.name).toBe('kubernetes://tls-only-cacert');
    expect(cluster(s, 8443).transport_socket!.typed_config.common_tls_context.tls_certificate_sds_secret_configs).toEqual([SDS('kubernetes://client-credential')]);
    expect(cluster(s, 443, 'one').transport_socket!.typed_config.common_tls_context.tls_certificate_sds_secret_configs).toEqual([SDS('kubernetes://tls-only')]);
  });

  it('a Secret outside the gateway namespace, a namespace of another gateway, a Secret without the keys: warned; the SDS names stay (connections fail)', () => {
    const shop = snap(rule('{mode: MUTUAL, credentialName: in-shop}') + SECRETS);
    expect(shop.warnings.map((w) => `${w.path}: ${w.message}`)).toEqual([
      `spec.trafficPolicy.tls.credentialName: secret "in-shop" not found in namespace istio-system (the gateway's, where Istio looks for a DestinationRule's credentialName); connections to this destination fail`,
    ]);
    expect(cluster(shop).transport_socket!.typed_config.common_tls_context.tls_certificate_sds_secret_configs).toEqual([SDS('kubernetes://in-shop')]);
    expect(shop.secrets.has('kubernetes://in-shop')).toBe(false);

    const other = snap(rule('{mode: SIMPLE, credentialName: "kubernetes://shop/in-shop"}') + SECRETS);
    expect(other.warnings.map((w) => w.message)).toEqual([`credentialName "kubernetes://shop/in-shop": a gateway reads DestinationRule credentials only from its own namespace istio-system, as Istio; connections to this destination fail`]);

    const noCa = snap(rule('{mode: SIMPLE, credentialName: no-ca}') + SECRETS);
    expect(noCa.warnings.map((w) => w.message)).toEqual([
      `secret "no-ca" has no cacert (or ca.crt) and there is no secret "no-ca-cacert" with one: the upstream certificate cannot be verified (set insecureSkipVerify to skip it); connections to this destination fail`,
    ]);

    const caOnly = snap(rule('{mode: MUTUAL, credentialName: client-credential-cacert, insecureSkipVerify: true}') + SECRETS);
    expect(caOnly.warnings.map((w) => w.message)).toEqual([`secret "client-credential-cacert" has no cert and key (or tls.crt and tls.key), which mode MUTUAL presents; connections to this destination fail`]);
  });

  it('a changed Secret changes the snapshot (new connections get it)', () => {
    const a = snap(rule('{mode: MUTUAL, credentialName: client-credential}') + SECRETS);
    const b = snap(rule('{mode: MUTUAL, credentialName: client-credential}') + SECRETS.replace('CLIENT-CERT', 'CLIENT-CERT-2'));
    expect(b.hash).not.toBe(a.hash);
    expect(JSON.stringify(cluster(b).transport_socket)).toBe(JSON.stringify(cluster(a).transport_socket));
  });
});

describe('Gateway credentialName: istiod key and CA order', () => {
  it('cert/key before tls.crt/tls.key, and the <name>-cacert Secret before the Secret own CA', () => {
    const s = snap(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: client-credential}
${SECRETS}`);
    expect(s.secrets.get('kubernetes://client-credential')!.tls_certificate!.certificate_chain.inline_string).toBe('CLIENT-CERT');
    expect(s.secrets.get('kubernetes://client-credential-cacert')!.validation_context!.trusted_ca.inline_string).toBe('SEPARATE-CA');
  });
});
