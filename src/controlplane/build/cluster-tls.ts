// DestinationRule `tls` → the upstream TLS transport socket of a cluster (pilot cluster_tls):
// ISTIO_MUTUAL (the mesh identity over SDS), SIMPLE / MUTUAL from a credentialName Secret (over
// SDS, the Secret travelling in the snapshot) or from files (checked here, at config time).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import type { ClientTLSSettings, DestinationRuleSpec, Resource, TrafficPolicy } from '../../config/types.js';
import { sds, upstreamCredential } from '../gateway-tls.js';
import { MESH_CERT_SECRET, MESH_ROOT_SECRET, type Cluster, type Secret } from '../snapshot.js';
import type { BuildContext } from './context.js';

export interface UpstreamTls {
  transport_socket?: Cluster['transport_socket'];
  /** SDS secrets the transport socket names (credentialName). */
  secrets: Secret[];
}

/**
 * The transport socket of a cluster whose policy has this `tls` block (undefined: plain text),
 * for port `port` and subset `subset` of `host`; `dr` is the rule it comes from.
 */
export function upstreamTls(ctx: BuildContext, tls: ClientTLSSettings | undefined, dr: Resource<DestinationRuleSpec> | undefined, host: string, port: number, subset: string): UpstreamTls {
  const out: UpstreamTls = { secrets: [] };
  if (!tls) return out;
  // Problems with the rule's tls block, reported once per rule and field (many clusters share it).
  const tlsWarn = (field: string | null, message: string): void => {
    if (!dr) return;
    const spec = dr.spec;
    const found: Array<[Array<string | number>, TrafficPolicy | undefined]> = [[['spec', 'trafficPolicy'], spec.trafficPolicy]];
    (spec.trafficPolicy?.portLevelSettings ?? []).forEach((pl, i) => found.push([['spec', 'trafficPolicy', 'portLevelSettings', i], pl]));
    (spec.subsets ?? []).forEach((sub, i) => {
      found.push([['spec', 'subsets', i, 'trafficPolicy'], sub.trafficPolicy]);
      (sub.trafficPolicy?.portLevelSettings ?? []).forEach((pl, j) => found.push([['spec', 'subsets', i, 'trafficPolicy', 'portLevelSettings', j], pl]));
    });
    const base = found.find(([, tp]) => tp?.tls === tls)?.[0] ?? ['spec', 'trafficPolicy'];
    ctx.warnings.warnOnce(dr, field ? [...base, 'tls', field] : [...base, 'tls'], message);
  };
  if (tls.mode === 'ISTIO_MUTUAL') {
    // Istio: the mesh identity over SDS (`default` certificate, `ROOTCA` trust anchor), the
    // server checked against the mesh root and, only when subjectAltNames are given, its SANs;
    // SNI `outbound_.<port>_.<subset>_.<host>` unless the rule sets one.
    out.transport_socket = {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        sni: tls.sni || `outbound_.${port}_.${subset}_.${host}`,
        common_tls_context: {
          tls_certificate_sds_secret_configs: [sds(MESH_CERT_SECRET)],
          combined_validation_context: {
            default_validation_context: tls.subjectAltNames?.length ? { match_subject_alt_names: tls.subjectAltNames.map((exact) => ({ exact })) } : {},
            validation_context_sds_secret_config: sds(MESH_ROOT_SECRET),
          },
        },
        ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
      },
    };
  }
  if ((tls.mode === 'SIMPLE' || tls.mode === 'MUTUAL') && tls.credentialName) {
    // A Secret in the gateway's namespace, over SDS as istiod names it (gateway-tls.ts); the
    // secrets travel in the snapshot, so a changed Secret reaches new connections without a restart.
    const c = upstreamCredential(tls, ctx.secrets, ctx.opts.namespace, []);
    for (const note of c.notes) tlsWarn('credentialName', note);
    if (c.cert) out.secrets.push(c.cert.secret);
    if (c.ca) out.secrets.push(c.ca.secret);
    const sans = tls.subjectAltNames ?? [];
    out.transport_socket = {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        ...(tls.sni ? { sni: tls.sni } : {}),
        common_tls_context: {
          // Istio names the Secret's certificate for MUTUAL only, and its CA unless insecureSkipVerify.
          ...(c.certName ? { tls_certificate_sds_secret_configs: [sds(c.certName)] } : {}),
          ...(c.caName ? { combined_validation_context: { default_validation_context: sans.length > 0 ? { match_subject_alt_names: sans.map((exact) => ({ exact })) } : {}, validation_context_sds_secret_config: sds(c.caName) } } : {}),
        },
        ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
      },
    };
  } else if (tls.mode === 'SIMPLE' || tls.mode === 'MUTUAL') {
    if (tls.caCrl) tlsWarn('caCrl', 'caCrl is not enforced by Gatehouse yet; ignored');
    // Certificate paths are relative to the DestinationRule's YAML file, like Gateway certificates.
    const file = (p: string): string => (dr && !isAbsolute(p) ? resolvePath(dirname(dr.source.file), p) : p);
    // Unusable files are reported here, at config time, not by each request (those fail with 503 UF).
    const readPem = (field: string, p: string, kind: 'cert' | 'key'): string | null => {
      let text: string;
      try {
        text = readFileSync(p, 'utf8');
      } catch (err) {
        tlsWarn(field, `cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); connections to this destination fail`);
        return null;
      }
      try {
        if (kind === 'cert') new X509Certificate(text);
        else createPrivateKey(text);
        return text;
      } catch {
        tlsWarn(field, `${p} is not a PEM ${kind === 'cert' ? 'certificate' : 'private key'}; connections to this destination fail`);
        return null;
      }
    };
    const mutual = tls.mode === 'MUTUAL' && tls.clientCertificate && tls.privateKey;
    const ca = tls.caCertificates ? file(tls.caCertificates) : undefined;
    const cert = mutual ? file(tls.clientCertificate!) : undefined;
    const key = mutual ? file(tls.privateKey!) : undefined;
    if (ca) readPem('caCertificates', ca, 'cert');
    if (cert && key) {
      const c = readPem('clientCertificate', cert, 'cert');
      const k = readPem('privateKey', key, 'key');
      if (c && k && !new X509Certificate(c).checkPrivateKey(createPrivateKey(k))) tlsWarn('privateKey', `${key} does not match the client certificate ${cert}; connections to this destination fail`);
    }
    out.transport_socket = {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        ...(tls.sni ? { sni: tls.sni } : {}),
        common_tls_context: {
          ...(cert && key ? { tls_certificates: [{ certificate_chain: { filename: cert }, private_key: { filename: key } }] } : {}),
          validation_context: {
            ...(ca ? { trusted_ca: { filename: ca } } : {}),
            ...(tls.subjectAltNames ? { match_subject_alt_names: tls.subjectAltNames.map((exact) => ({ exact })) } : {}),
          },
        },
        ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
      },
    };
  }
  return out;
}
