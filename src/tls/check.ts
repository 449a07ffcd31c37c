// Certificate checks of a configuration, as validation problems naming the Gateway and field:
// unreadable files, certificates that do not parse, keys that do not match, expired certificates,
// CA bundles that do not parse. `gatehouse validate` prints them; `run` rejects a configuration
// (or a certificate file change) that has any, and the last good certificates keep serving.
// DestinationRule `tls.credentialName` too: its Secret's material, and the fields Istio's
// validation refuses beside it.
import { ACME_CA_ANNOTATION, serverTls, secretIndex, TERMINATING_MODES, upstreamCredential, type SecretIndex, type SecretRef } from '../controlplane/gateway-tls.js';
import type { ClientTLSSettings, DestinationRuleSpec, FieldPath, GatewaySpec, Problem, Resource, TrafficPolicy } from '../config/types.js';
import { gatewayApplies, reporterFor } from '../config/validate-refs.js';
import { existsSync } from 'node:fs';
import { loadSecret, type Names } from './material.js';
import { CertError } from './pem.js';

export interface CertificateCheckOptions {
  /** `--namespace` */
  namespace: string;
  labels: Readonly<Record<string, string>>;
  /** `validate` without --labels: every Gateway. */
  allGateways?: boolean;
  now?: number;
}

function namesFor(ref: SecretRef): Names {
  const s = ref.secret;
  if (ref.keys) return { cert: `${ref.what} ${ref.keys.cert}`, key: ref.keys.key ?? 'key', ca: `${ref.what} ${ref.keys.ca}` };
  return {
    cert: `certificate ${s.tls_certificate?.certificate_chain.filename ?? ''}`,
    key: `private key ${s.tls_certificate?.private_key.filename ?? ''}`,
    ca: `CA certificates ${s.validation_context?.trusted_ca.filename ?? ''}`,
  };
}

export function checkCertificates(resources: readonly Resource[], opts: CertificateCheckOptions): Problem[] {
  const problems: Problem[] = [];
  const secrets = secretIndex(resources);
  for (const r of resources) if (r.kind === 'DestinationRule') checkUpstreamCredentials(r as Resource<DestinationRuleSpec>, secrets, opts, problems);
  for (const r of resources) {
    if (r.kind !== 'Gateway') continue;
    if (!opts.allGateways && !gatewayApplies(r, { ...opts.labels })) continue;
    const gw = r as Resource<GatewaySpec>;
    const out = reporterFor(gw, problems);
    const caFile = gw.metadata.annotations?.[ACME_CA_ANNOTATION];
    let acmeCaChecked = false;
    (gw.spec.servers ?? []).forEach((server, i) => {
      if (server.port.protocol.toUpperCase() !== 'HTTPS' || !TERMINATING_MODES.includes(server.tls?.mode ?? 'PASSTHROUGH')) return;
      const t = serverTls(gw, server, i, secrets, opts.namespace);
      for (const ref of [t.cert, t.ca]) {
        if (!ref) continue;
        if (ref.secret.acme) {
          if (caFile && !acmeCaChecked && ref.secret.acme.ca_file && !existsSync(ref.secret.acme.ca_file)) {
            out.error(['metadata', 'annotations', ACME_CA_ANNOTATION], `cannot read ${ref.secret.acme.ca_file}: no such file`);
          }
          acmeCaChecked = true;
          continue;
        }
        try {
          loadSecret(ref.secret, namesFor(ref), opts.now);
        } catch (e) {
          if (!(e instanceof CertError)) throw e;
          out.error(ref.filePaths?.[e.part] ?? ref.path, e.message);
        }
      }
    });
  }
  return problems;
}

/** Every `tls` block of a DestinationRule, with its path. */
function tlsBlocks(dr: Resource<DestinationRuleSpec>): Array<[FieldPath, ClientTLSSettings]> {
  const out: Array<[FieldPath, ClientTLSSettings]> = [];
  const policy = (base: FieldPath, p: TrafficPolicy | undefined): void => {
    if (p?.tls) out.push([[...base, 'tls'], p.tls]);
    (p?.portLevelSettings ?? []).forEach((pl, i) => pl.tls && out.push([[...base, 'portLevelSettings', i, 'tls'], pl.tls]));
  };
  policy(['spec', 'trafficPolicy'], dr.spec.trafficPolicy);
  (dr.spec.subsets ?? []).forEach((sub, i) => policy(['spec', 'subsets', i, 'trafficPolicy'], sub.trafficPolicy));
  return out;
}

/**
 * `credentialName` in SIMPLE / MUTUAL origination: the file fields beside it are refused as Istio's
 * validation refuses them, and the Secret's certificate, key and CA must load. A missing Secret or
 * key is a warning of the translation (resolve.ts), as for Gateways: the rule may come before it.
 */
function checkUpstreamCredentials(dr: Resource<DestinationRuleSpec>, secrets: SecretIndex, opts: CertificateCheckOptions, problems: Problem[]): void {
  const out = reporterFor(dr, problems);
  for (const [path, tls] of tlsBlocks(dr)) {
    if (!tls.credentialName || (tls.mode !== 'SIMPLE' && tls.mode !== 'MUTUAL')) continue;
    const at = [...path, 'credentialName'];
    const files = (['clientCertificate', 'privateKey', 'caCertificates', 'caCrl'] as const).filter((k) => tls[k] !== undefined && tls[k] !== '');
    if (files.length > 0) out.error(at, `cannot specify client certificates or CA certificate or CA CRL if credentialName is set (${files.join(', ')})`);
    if (tls.mode === 'SIMPLE' && tls.insecureSkipVerify) out.error(at, 'cannot specify credentialName when insecureSkipVerify is set true in mode SIMPLE');
    const c = upstreamCredential(tls, secrets, opts.namespace, at);
    for (const ref of [c.cert, c.ca]) {
      if (!ref) continue;
      try {
        loadSecret(ref.secret, namesFor(ref), opts.now);
      } catch (e) {
        if (!(e instanceof CertError)) throw e;
        out.error(at, e.message);
      }
    }
  }
}
