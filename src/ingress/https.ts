// What an HTTPS listener of the snapshot asks for, read from its filter chains once per config
// version, and which engine can honour it: node:http2 when h2 is offered by ALPN (the default, as
// Istio's gateway), a client certificate must be verified, or a protocol version other than uWS's
// (TLS 1.2-1.3) is set; uWS for SIMPLE servers narrowed to http/1.1 (its faster HTTP/1.1).
import type { Listener, TlsVersion } from '../controlplane/snapshot.js';

export interface TlsChainSpec {
  /** `Gateway/ns/name#server`, for logs. */
  server: string;
  /** SNI names (`*.example.com` wildcards); null: any name and clients without SNI. */
  names: string[] | null;
  certSecret: string;
  /** MUTUAL / OPTIONAL_MUTUAL: the CA a client certificate must chain to. */
  caSecret?: string;
  mode: 'SIMPLE' | 'MUTUAL' | 'OPTIONAL_MUTUAL';
  /** A client certificate must carry one of these SANs (when not empty). */
  subjectAltNames: string[];
  minVersion?: TlsVersion;
  maxVersion?: TlsVersion;
  ciphers?: string[];
  /** ALPN protocols offered (`h2` needs the node:http2 engine). */
  alpn: string[];
}

export function tlsChains(l: Listener): TlsChainSpec[] {
  const out: TlsChainSpec[] = [];
  for (const fc of l.filter_chains) {
    const ctx = fc.transport_socket?.typed_config;
    const cert = ctx?.common_tls_context.tls_certificate_sds_secret_configs[0]?.name;
    if (!ctx || !cert) continue;
    const common = ctx.common_tls_context;
    const v = common.combined_validation_context;
    const p = common.tls_params;
    const names = fc.filter_chain_match?.server_names;
    out.push({
      server: fc.metadata?.filter_metadata.istio.server ?? l.name,
      names: names && names.length > 0 ? [...names] : null,
      certSecret: cert,
      ...(v ? { caSecret: v.validation_context_sds_secret_config.name } : {}),
      mode: ctx.require_client_certificate ? 'MUTUAL' : v ? 'OPTIONAL_MUTUAL' : 'SIMPLE',
      subjectAltNames: (v?.default_validation_context.match_subject_alt_names ?? []).map((m) => m.exact),
      ...(p?.tls_minimum_protocol_version ? { minVersion: p.tls_minimum_protocol_version } : {}),
      ...(p?.tls_maximum_protocol_version ? { maxVersion: p.tls_maximum_protocol_version } : {}),
      ...(p?.cipher_suites ? { ciphers: [...p.cipher_suites] } : {}),
      alpn: [...common.alpn_protocols],
    });
  }
  return out;
}

/**
 * uWS speaks TLS 1.2 and 1.3 (BoringSSL's defaults), cannot ask for client certificates and has
 * neither ALPN nor HTTP/2.
 */
export function needsNodeTls(chains: readonly TlsChainSpec[]): boolean {
  return chains.some(
    (c) =>
      c.mode !== 'SIMPLE' ||
      c.alpn.includes('h2') ||
      (c.minVersion !== undefined && c.minVersion !== 'TLS_AUTO' && c.minVersion !== 'TLSv1_2') ||
      (c.maxVersion !== undefined && c.maxVersion !== 'TLS_AUTO' && c.maxVersion !== 'TLSv1_3'),
  );
}

/** Node's names for Envoy's TLS versions. */
export function nodeTlsVersion(v: TlsVersion | undefined): 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3' | undefined {
  switch (v) {
    case 'TLSv1_0':
      return 'TLSv1';
    case 'TLSv1_1':
      return 'TLSv1.1';
    case 'TLSv1_2':
      return 'TLSv1.2';
    case 'TLSv1_3':
      return 'TLSv1.3';
    default:
      return undefined;
  }
}

/** The ALPN protocols a node:tls listener offers for these chains (one list per port). */
export function alpnOf(chains: readonly TlsChainSpec[]): string[] {
  return chains.some((c) => c.alpn.includes('h2')) ? ['h2', 'http/1.1'] : ['http/1.1'];
}
