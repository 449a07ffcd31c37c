// Gateway server `tls` → Envoy's DownstreamTlsContext and the SDS secrets it names, as istiod
// builds them for a gateway: `credentialName` Secrets (looked up in the gateway's namespace, then
// in the Gateway's), certificate files (relative paths against the YAML file's folder), and the
// Gatehouse ACME annotation. Also DestinationRule `tls.credentialName` (TLS origination), whose
// Secret istiod serves a gateway only from the gateway's own namespace. Pure: shared by resolve()
// and the certificate checks of the tls module.
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import type { ClientTLSSettings, FieldPath, GatewayServer, GatewaySpec, Resource } from '../config/types.js';
import type { DownstreamTlsContext, SdsSecretConfig, Secret, TlsVersion } from './snapshot.js';

/** Gateway annotations that make SIMPLE HTTPS servers get their certificates from ACME. */
export const ACME_DIRECTORY_ANNOTATION = 'gatehouse.io/acme-directory';
export const ACME_EMAIL_ANNOTATION = 'gatehouse.io/acme-email';
/** PEM file (relative to the YAML file) trusted for the directory's own HTTPS, e.g. pebble's. */
export const ACME_CA_ANNOTATION = 'gatehouse.io/acme-ca-file';
/**
 * Gateway annotation: the ALPN protocols its HTTPS servers offer, `h2,http/1.1` (the default, as
 * Istio's gateway) or `http/1.1`, which keeps a port whose Gateways all say so on the uWS engine
 * (faster HTTP/1.1, no ALPN nor HTTP/2).
 */
export const ALPN_ANNOTATION = 'gatehouse.io/alpn';
/**
 * Gateway annotation (egress): its HTTP servers also act as a forward proxy for workloads that
 * can only set HTTP(S)_PROXY: absolute-form requests and CONNECT, to registered hosts only under
 * REGISTRY_ONLY. "true" or "false" (default).
 */
export const FORWARD_PROXY_ANNOTATION = 'gatehouse.io/forward-proxy';
/**
 * Gateway annotation: the engine serving HTTP/1.1 on its HTTP and SIMPLE HTTPS ports, `uws` or
 * `strict` (node:http, RFC 9112 parsing); unset, `gatehouse run --http1-engine` decides.
 */
export const HTTP1_ENGINE_ANNOTATION = 'gatehouse.io/http1-engine';
export const ALPN_H2: readonly string[] = ['h2', 'http/1.1'];
export const ALPN_H1: readonly string[] = ['http/1.1'];

export type TerminatingMode = 'SIMPLE' | 'MUTUAL' | 'OPTIONAL_MUTUAL';
export const TERMINATING_MODES: readonly string[] = ['SIMPLE', 'MUTUAL', 'OPTIONAL_MUTUAL'];

/** Where a secret of a server comes from, to name it in problems. */
export interface SecretRef {
  secret: Secret;
  /** The field naming it, e.g. `spec.servers[0].tls.credentialName`. */
  path: FieldPath;
  /** For messages: `secret "x"`, `certificate file /a/b.crt`. */
  what: string;
  /** Key names inside a Kubernetes Secret (tls.crt / cert ...), for messages. */
  keys?: { cert?: string; key?: string; ca?: string };
  /** For file sources: the field of each file. */
  filePaths?: { cert?: FieldPath; key?: FieldPath; ca?: FieldPath };
}

export interface ServerTls {
  mode: TerminatingMode;
  /** Missing when the Secret does not exist (validation warns about it). */
  cert?: SecretRef;
  ca?: SecretRef;
  /** Set when `cert` (and, for the mutual modes, `ca`) could be found. */
  context?: DownstreamTlsContext;
  /** Things that could not be honoured, with their field. */
  notes: Array<{ path: FieldPath; message: string }>;
}

/** Secrets by `namespace/name`. */
export type SecretIndex = ReadonlyMap<string, Resource>;

export function secretIndex(resources: readonly Resource[]): Map<string, Resource> {
  const m = new Map<string, Resource>();
  for (const r of resources) if (r.kind === 'Secret') m.set(`${r.metadata.namespace}/${r.metadata.name}`, r);
  return m;
}

/** The keys of a Secret, decoded: `data` is base64, `stringData` (which wins) is text. */
export function secretData(secret: Resource): Map<string, string> {
  const doc = (secret.spec ?? {}) as { data?: Record<string, unknown>; stringData?: Record<string, unknown> };
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(doc.data ?? {})) if (typeof v === 'string') out.set(k, Buffer.from(v, 'base64').toString('utf8'));
  for (const [k, v] of Object.entries(doc.stringData ?? {})) if (typeof v === 'string') out.set(k, v);
  return out;
}

/** A Secret's certificate and key as istiod reads them: `cert`/`key` first, then `tls.crt`/`tls.key`; empty values do not count. */
export function secretCertificate(data: ReadonlyMap<string, string>): { cert: string; key: string; certKey: string; keyKey: string } | undefined {
  for (const [certKey, keyKey] of [
    ['cert', 'key'],
    ['tls.crt', 'tls.key'],
  ] as const) {
    const cert = data.get(certKey);
    const key = data.get(keyKey);
    if (cert && key) return { cert, key, certKey, keyKey };
  }
  return undefined;
}

/**
 * The CA of credential `name` in `namespace`, as istiod answers SDS `<name>-cacert`: the Secret
 * `<name>-cacert` when there is one, else `<name>` itself; key `cacert`, then `ca.crt`.
 */
export function secretCa(secrets: SecretIndex, namespace: string, name: string): { pem: string; secret: string; key: string } | undefined {
  const own = secrets.get(`${namespace}/${name}-cacert`);
  const found = own ?? secrets.get(`${namespace}/${name}`);
  if (!found) return undefined;
  const data = secretData(found);
  for (const key of ['cacert', 'ca.crt']) {
    const pem = data.get(key);
    if (pem) return { pem, secret: found.metadata.name, key };
  }
  return undefined;
}

const TLS_VERSIONS: Record<string, TlsVersion> = { TLS_AUTO: 'TLS_AUTO', TLSV1_0: 'TLSv1_0', TLSV1_1: 'TLSv1_1', TLSV1_2: 'TLSv1_2', TLSV1_3: 'TLSv1_3' };

export function sds(name: string): SdsSecretConfig {
  return { name, sds_config: { ads: {}, resource_api_version: 'V3' } };
}

/** A path as written in a Gateway, made absolute against the folder of the YAML file naming it. */
export function configFilePath(r: Resource, p: string): string {
  return isAbsolute(p) ? p : resolvePath(dirname(resolvePath(r.source.file)), p);
}

/** The ACME settings of a Gateway, when annotated. */
export function acmeSettings(gw: Resource): { directory: string; email?: string; caFile?: string } | undefined {
  const a = gw.metadata.annotations ?? {};
  const directory = a[ACME_DIRECTORY_ANNOTATION];
  if (!directory) return undefined;
  return {
    directory,
    ...(a[ACME_EMAIL_ANNOTATION] ? { email: a[ACME_EMAIL_ANNOTATION] } : {}),
    ...(a[ACME_CA_ANNOTATION] ? { caFile: configFilePath(gw, a[ACME_CA_ANNOTATION]) } : {}),
  };
}

/** A server's host names without the `namespace/` part, lower-cased, de-duplicated. */
export function serverHostNames(server: GatewayServer): string[] {
  return [...new Set(server.hosts.map((h) => h.slice(h.indexOf('/') + 1).toLowerCase()))];
}

/**
 * The TLS of one terminating (SIMPLE / MUTUAL / OPTIONAL_MUTUAL) server. `gatewayNamespace` is
 * `--namespace`; Secrets there are `kubernetes://<name>`, those found in the Gateway's own
 * namespace `kubernetes://<ns>/<name>` (Istio's SDS names).
 */
export function serverTls(gw: Resource<GatewaySpec>, server: GatewayServer, index: number, secrets: SecretIndex, gatewayNamespace: string): ServerTls {
  const tls = server.tls ?? {};
  const mode = (tls.mode ?? 'SIMPLE') as TerminatingMode;
  const base: FieldPath = ['spec', 'servers', index, 'tls'];
  const out: ServerTls = { mode, notes: [] };
  const mutual = mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL';
  const acme = mode === 'SIMPLE' ? acmeSettings(gw) : undefined;

  const credentials = tls.credentialName !== undefined ? [tls.credentialName] : (tls.credentialNames ?? []);
  if (credentials.length > 1) out.notes.push({ path: [...base, 'credentialNames'], message: 'only the first of credentialNames is served (one certificate per server name)' });
  const credential = credentials[0]?.replace(/^kubernetes:\/\//, '');
  const credPath: FieldPath = tls.credentialName !== undefined ? [...base, 'credentialName'] : [...base, 'credentialNames', 0];

  if (credential !== undefined && acme) {
    const hosts = serverHostNames(server).filter((h) => h !== '*' && !h.startsWith('*.'));
    if (hosts.length === 0) {
      out.notes.push({ path: ['spec', 'servers', index, 'hosts'], message: 'no host of this server can get an ACME certificate (HTTP-01 cannot validate wildcards); not served' });
      return out;
    }
    const name = `acme://${gw.metadata.namespace}/${credential}`;
    out.cert = {
      secret: { name, acme: { directory_url: acme.directory, hosts, ...(acme.email ? { email: acme.email } : {}), ...(acme.caFile ? { ca_file: acme.caFile } : {}) } },
      path: credPath,
      what: `ACME certificate ${JSON.stringify(credential)}`,
    };
  } else if (credential !== undefined) {
    if (credential.includes('/')) {
      out.notes.push({ path: credPath, message: `credentialName ${JSON.stringify(credential)} with a namespace is not supported; not served` });
      return out;
    }
    const namespaces = [...new Set([gatewayNamespace, gw.metadata.namespace])];
    const found = namespaces.map((n) => secrets.get(`${n}/${credential}`)).find((x) => x !== undefined);
    if (!found) return out;
    const prefix = found.metadata.namespace === gatewayNamespace ? 'kubernetes://' : `kubernetes://${found.metadata.namespace}/`;
    const data = secretData(found);
    const pair = secretCertificate(data);
    if (!pair) return out;
    const what = `secret ${JSON.stringify(credential)}`;
    out.cert = {
      secret: { name: `${prefix}${credential}`, tls_certificate: { certificate_chain: { inline_string: pair.cert }, private_key: { inline_string: pair.key } } },
      path: credPath,
      what,
      keys: { cert: pair.certKey, key: pair.keyKey },
    };
    if (mutual) {
      // The CA as istiod serves `<name>-cacert`: that Secret, else this one (cacert / ca.crt).
      const ca = secretCa(secrets, found.metadata.namespace, credential);
      if (ca) {
        out.ca = { secret: { name: `${prefix}${credential}-cacert`, validation_context: { trusted_ca: { inline_string: ca.pem } } }, path: credPath, what: `secret ${JSON.stringify(ca.secret)}`, keys: { ca: ca.key } };
      } else if (tls.caCertificates) {
        const ca = configFilePath(gw, tls.caCertificates);
        out.ca = { secret: { name: `file-root:${ca}`, validation_context: { trusted_ca: { filename: ca } } }, path: [...base, 'caCertificates'], what: `CA file ${ca}`, filePaths: { ca: [...base, 'caCertificates'] } };
      }
    }
  } else if (tls.serverCertificate && tls.privateKey) {
    const cert = configFilePath(gw, tls.serverCertificate);
    const key = configFilePath(gw, tls.privateKey);
    out.cert = {
      secret: { name: `file-cert:${cert}~${key}`, tls_certificate: { certificate_chain: { filename: cert }, private_key: { filename: key } } },
      path: [...base, 'serverCertificate'],
      what: `certificate file ${cert}`,
      filePaths: { cert: [...base, 'serverCertificate'], key: [...base, 'privateKey'] },
    };
    if (mutual && tls.caCertificates) {
      const ca = configFilePath(gw, tls.caCertificates);
      out.ca = { secret: { name: `file-root:${ca}`, validation_context: { trusted_ca: { filename: ca } } }, path: [...base, 'caCertificates'], what: `CA file ${ca}`, filePaths: { ca: [...base, 'caCertificates'] } };
    }
  }
  if (!out.cert || (mutual && !out.ca)) return out;

  for (const k of ['verifyCertificateSpki', 'verifyCertificateHash', 'caCrl'] as const) {
    const v = tls[k];
    if (v !== undefined && (!Array.isArray(v) || v.length > 0)) out.notes.push({ path: [...base, k], message: `${k} is not supported by Gatehouse yet; ignored` });
  }
  const min = tls.minProtocolVersion ? TLS_VERSIONS[tls.minProtocolVersion] : undefined;
  const max = tls.maxProtocolVersion ? TLS_VERSIONS[tls.maxProtocolVersion] : undefined;
  const ciphers = tls.cipherSuites && tls.cipherSuites.length > 0 ? tls.cipherSuites : undefined;
  const params = {
    ...(min && min !== 'TLS_AUTO' ? { tls_minimum_protocol_version: min } : {}),
    ...(max && max !== 'TLS_AUTO' ? { tls_maximum_protocol_version: max } : {}),
    ...(ciphers ? { cipher_suites: [...ciphers] } : {}),
  };
  const sans = mutual ? (tls.subjectAltNames ?? []) : [];
  out.context = {
    '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
    common_tls_context: {
      ...(Object.keys(params).length > 0 ? { tls_params: params } : {}),
      alpn_protocols: [...ALPN_H2],
      tls_certificate_sds_secret_configs: [sds(out.cert.secret.name)],
      ...(out.ca
        ? {
            combined_validation_context: {
              default_validation_context: sans.length > 0 ? { match_subject_alt_names: sans.map((exact) => ({ exact })) } : {},
              validation_context_sds_secret_config: sds(out.ca.secret.name),
            },
          }
        : {}),
    },
    require_client_certificate: mode === 'MUTUAL',
  };
  return out;
}

/** DestinationRule `tls.credentialName` (SIMPLE / MUTUAL origination), resolved for this gateway. */
export interface UpstreamCredential {
  /** SDS names the cluster's UpstreamTlsContext references (istiod's): `kubernetes://<name>` (MUTUAL) and `kubernetes://<name>-cacert`. */
  certName?: string;
  caName?: string;
  /** The secrets to serve under those names, when the Secret has what they need. */
  cert?: SecretRef;
  ca?: SecretRef;
  /** What cannot be served (connections to the destination fail), for warnings. */
  notes: string[];
}

/**
 * istiod serves a gateway the Secret a DestinationRule's `credentialName` names only from the
 * gateway's own namespace (`--namespace`; SDS `kubernetes://<name>`, same-namespace only):
 * MUTUAL presents its certificate and key, and both modes verify the upstream against its CA
 * (`<name>-cacert` or the Secret's own `cacert` / `ca.crt`) unless `insecureSkipVerify`.
 */
export function upstreamCredential(tls: ClientTLSSettings, secrets: SecretIndex, gatewayNamespace: string, path: FieldPath): UpstreamCredential {
  const out: UpstreamCredential = { notes: [] };
  const raw = tls.credentialName ?? '';
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//.exec(raw)?.[1];
  if (scheme !== undefined && scheme !== 'kubernetes') {
    out.notes.push(`credentialName ${JSON.stringify(raw)}: ${scheme}:// credentials are not supported by Gatehouse for TLS origination; connections to this destination fail`);
    return out;
  }
  let name = raw.replace(/^kubernetes:\/\//, '');
  const slash = name.indexOf('/');
  if (slash >= 0) {
    const ns = name.slice(0, slash);
    name = name.slice(slash + 1);
    if (ns !== gatewayNamespace) {
      out.notes.push(`credentialName ${JSON.stringify(raw)}: a gateway reads DestinationRule credentials only from its own namespace ${gatewayNamespace}, as Istio; connections to this destination fail`);
      return out;
    }
  }
  const mutual = tls.mode === 'MUTUAL';
  const verify = !tls.insecureSkipVerify;
  if (mutual) out.certName = `kubernetes://${name}`;
  if (verify) out.caName = `kubernetes://${name}-cacert`;
  const found = secrets.get(`${gatewayNamespace}/${name}`);
  if (mutual) {
    if (!found) {
      out.notes.push(`secret ${JSON.stringify(name)} not found in namespace ${gatewayNamespace} (the gateway's, where Istio looks for a DestinationRule's credentialName); connections to this destination fail`);
      return out;
    }
    const pair = secretCertificate(secretData(found));
    if (pair) {
      out.cert = {
        secret: { name: out.certName!, tls_certificate: { certificate_chain: { inline_string: pair.cert }, private_key: { inline_string: pair.key } } },
        path,
        what: `secret ${JSON.stringify(name)}`,
        keys: { cert: pair.certKey, key: pair.keyKey },
      };
    } else {
      out.notes.push(`secret ${JSON.stringify(name)} has no cert and key (or tls.crt and tls.key), which mode MUTUAL presents; connections to this destination fail`);
    }
  }
  if (verify) {
    const ca = secretCa(secrets, gatewayNamespace, name);
    if (ca) {
      out.ca = { secret: { name: out.caName!, validation_context: { trusted_ca: { inline_string: ca.pem } } }, path, what: `secret ${JSON.stringify(ca.secret)}`, keys: { ca: ca.key } };
    } else if (!found && !secrets.has(`${gatewayNamespace}/${name}-cacert`)) {
      out.notes.push(`secret ${JSON.stringify(name)} not found in namespace ${gatewayNamespace} (the gateway's, where Istio looks for a DestinationRule's credentialName); connections to this destination fail`);
    } else {
      out.notes.push(`secret ${JSON.stringify(name)} has no cacert (or ca.crt) and there is no secret ${JSON.stringify(`${name}-cacert`)} with one: the upstream certificate cannot be verified (set insecureSkipVerify to skip it); connections to this destination fail`);
    }
  }
  return out;
}
