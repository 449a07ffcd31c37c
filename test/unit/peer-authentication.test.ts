// PeerAuthentication scoping on the gateway's MUTUAL / OPTIONAL_MUTUAL servers, DestinationRule
// ISTIO_MUTUAL translation, and SDS `default` / `ROOTCA` for xDS clients.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve, type ResolveOptions } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { decodeSnapshotResource } from '../../src/controlplane/xds/codec.js';
import { SECRET_TYPE } from '../../src/controlplane/xds/protos.js';
import { clientSpiffeId, SnapshotViews } from '../../src/controlplane/xds/snapshot-views.js';
import type { ClientInfo } from '../../src/controlplane/xds/view.js';
import { MeshCa, WorkloadCertificates } from '../../src/tls/mesh-ca.js';
import { X509Certificate } from 'node:crypto';

const OPTS: ResolveOptions = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };

function snap(yaml: string, opts: Partial<ResolveOptions> = {}): Snapshot {
  const { resources, problems } = parseYamlText(yaml, 'cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { ...OPTS, ...opts });
}

const GATEWAY = `
apiVersion: v1
kind: Secret
metadata: {name: cred, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: C, tls.key: K, ca.crt: CA}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: cred}
  - port: {number: 9443, name: https2, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: cred}
  - port: {number: 10443, name: simple, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cred}
`;

const pa = (name: string, ns: string, body: string): string => `---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ${name}, namespace: ${ns}}
spec: ${body}
`;

/** port → [require_client_certificate, has a validation context, mtls_mode] */
function modes(s: Snapshot): Record<number, [boolean, boolean, string | undefined]> {
  const out: Record<number, [boolean, boolean, string | undefined]> = {};
  for (const l of s.listeners) {
    const fc = l.filter_chains[0]!;
    const ctx = fc.transport_socket!.typed_config;
    out[l.address.socket_address.port_value] = [ctx.require_client_certificate, !!ctx.common_tls_context.combined_validation_context, fc.metadata?.filter_metadata.istio.mtls_mode];
  }
  return out;
}

describe('PeerAuthentication on the gateway', () => {
  it('without a policy, servers keep their own TLS mode', () => {
    expect(modes(snap(GATEWAY))).toEqual({ 8443: [true, true, undefined], 9443: [false, true, undefined], 10443: [false, false, undefined] });
  });

  it('STRICT in the root namespace requires a client certificate on every server that verifies them', () => {
    const s = snap(GATEWAY + pa('default', 'istio-system', '{mtls: {mode: STRICT}}'), { namespace: 'gateways' });
    expect(modes(s)).toEqual({ 8443: [true, true, 'STRICT'], 9443: [true, true, 'STRICT'], 10443: [false, false, undefined] });
  });

  it('PERMISSIVE makes the certificate optional; DISABLE stops asking for one', () => {
    expect(modes(snap(GATEWAY + pa('p', 'istio-system', '{mtls: {mode: PERMISSIVE}}')))[8443]).toEqual([false, true, 'PERMISSIVE']);
    expect(modes(snap(GATEWAY + pa('p', 'istio-system', '{mtls: {mode: DISABLE}}')))[8443]).toEqual([false, false, 'DISABLE']);
  });

  it('a selector policy wins over the namespace-wide one, which wins over the root namespace; UNSET inherits', () => {
    const root = pa('root', 'istio-system', '{mtls: {mode: DISABLE}}');
    const nsWide = pa('ns', 'gateways', '{mtls: {mode: PERMISSIVE}}');
    const mine = pa('mine', 'gateways', '{selector: {matchLabels: {istio: ingressgateway}}, mtls: {mode: STRICT}, portLevelMtls: {"9443": {mode: DISABLE}}}');
    const other = pa('other', 'gateways', '{selector: {matchLabels: {app: other}}, mtls: {mode: STRICT}}');
    const unset = pa('unset', 'gateways', '{selector: {matchLabels: {istio: ingressgateway}}, mtls: {mode: UNSET}}');
    const o = { namespace: 'gateways' };
    expect(modes(snap(GATEWAY + root, o))[8443]![2]).toBe('DISABLE');
    expect(modes(snap(GATEWAY + root + nsWide, o))[8443]![2]).toBe('PERMISSIVE');
    expect(modes(snap(GATEWAY + root + nsWide + other, o))[8443]![2]).toBe('PERMISSIVE');
    const m = modes(snap(GATEWAY + root + nsWide + mine, o));
    expect(m[8443]![2]).toBe('STRICT');
    expect(m[9443]).toEqual([false, false, 'DISABLE']);
    expect(modes(snap(GATEWAY + root + nsWide + unset, o))[8443]![2]).toBe('PERMISSIVE');
    // A policy in another (non-root) namespace does not apply.
    expect(modes(snap(GATEWAY + pa('x', 'elsewhere', '{mtls: {mode: DISABLE}}'), o))[8443]![2]).toBeUndefined();
  });
});

describe('DestinationRule ISTIO_MUTUAL', () => {
  it('names the mesh identity over SDS, Istio SNI, and no longer warns', () => {
    const s = snap(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: r, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/reviews]}}
`);
    expect(s.warnings.filter((w) => w.message.includes('ISTIO_MUTUAL'))).toEqual([]);
    const c = s.clusters.get('outbound|9080||reviews.shop.svc.cluster.local')!;
    expect(c.transport_socket!.typed_config).toEqual({
      sni: 'outbound_.9080_._.reviews.shop.svc.cluster.local',
      common_tls_context: {
        tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
        combined_validation_context: {
          default_validation_context: { match_subject_alt_names: [{ exact: 'spiffe://cluster.local/ns/shop/sa/reviews' }] },
          validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {}, resource_api_version: 'V3' } },
        },
      },
    });
  });
});

describe('SDS default / ROOTCA for xDS clients', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-sds-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const client = (id: string, metadata: Record<string, unknown> = {}, kind: ClientInfo['kind'] = 'envoy'): ClientInfo => ({ id, kind, metadata, userAgent: '' });

  it('derives the identity from the node id and SERVICE_ACCOUNT', () => {
    expect(clientSpiffeId(client('sidecar~10.0.0.1~pod.shop~shop.svc.cluster.local'), 'cluster.local')).toBe('spiffe://cluster.local/ns/shop/sa/default');
    expect(clientSpiffeId(client('sidecar~10.0.0.1~pod.shop~shop.svc.cluster.local', { SERVICE_ACCOUNT: 'reviews' }), 'td')).toBe('spiffe://td/ns/shop/sa/reviews');
    expect(clientSpiffeId(client('replica', { NAMESPACE: 'edge' }, 'gatehouse'), 'cluster.local')).toBe('spiffe://cluster.local/ns/edge/sa/gatehouse');
  });

  it("serves ROOTCA at once and the client's own certificate once issued, then pushes", async () => {
    const ca = await MeshCa.open({ stateDir: dir });
    const certs = new WorkloadCertificates(ca, { ttlMs: 3_600_000 });
    const views = new SnapshotViews(() => undefined);
    views.update(snap(GATEWAY));
    views.setMesh({ trustDomain: 'cluster.local', rootPem: ca.rootPem, cached: (i) => certs.cached(i), current: (i) => certs.current(i), get: (i) => certs.get(i) });
    let pushed = 0;
    const issued = new Promise<void>((r) => (views.onMeshIssued = () => (pushed++, r())));
    const c = client('sidecar~10.0.0.1~pod.shop~shop.svc.cluster.local', { SERVICE_ACCOUNT: 'reviews' });
    const first = views.view(c);
    const secrets = first.resources.get(SECRET_TYPE)!;
    expect([...secrets.keys()]).toEqual(['ROOTCA']);
    await issued;
    expect(pushed).toBe(1);
    const second = views.view(c);
    expect(second).not.toBe(first);
    const def = decodeSnapshotResource(SECRET_TYPE, second.resources.get(SECRET_TYPE)!.get('default')!) as { tls_certificate: { certificate_chain: { inline_string: string } } };
    const leaf = new X509Certificate(def.tls_certificate.certificate_chain.inline_string);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/reviews');
    expect(leaf.verify(ca.root.publicKey)).toBe(true);
    // Another namespace's client gets its own.
    const other = client('sidecar~10.0.0.2~pod.web~web.svc.cluster.local');
    views.view(other);
    await certs.get('spiffe://cluster.local/ns/web/sa/default');
    expect(views.view(c)).toBe(views.view(c));
  });
});
