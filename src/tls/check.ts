// Certificate checks of a configuration, as validation problems naming the Gateway and field:
// unreadable files, certificates that do not parse, keys that do not match, expired certificates,
// CA bundles that do not parse. `gatehouse validate` prints them; `run` rejects a configuration
// (or a certificate file change) that has any, and the last good certificates keep serving.
import { ACME_CA_ANNOTATION, serverTls, secretIndex, TERMINATING_MODES, type SecretRef } from '../controlplane/gateway-tls.js';
import type { GatewaySpec, Problem, Resource } from '../config/types.js';
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
