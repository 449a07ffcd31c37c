// The resolved configuration: xDS-shaped, immutable, versioned. Field names are Envoy's proto field
// names (snake_case) on purpose: `/config_dump` and the xDS encoder serialise these objects as they
// are, and the local data plane compiles the very same objects. Istio-only facts ride in
// `metadata.filter_metadata.istio`, as istiod does it.
import type { MeshConfig, Problem } from '../config/types.js';

export interface Duration {
  seconds: number;
  nanos: number;
}

export interface IstioMetadata {
  filter_metadata: { istio: Record<string, unknown> };
}

// ---- Listeners ------------------------------------------------------------------------------

export type ListenerProtocol = 'HTTP' | 'HTTPS' | 'HTTP2' | 'GRPC' | 'TCP' | 'TLS';

export interface SocketAddress {
  socket_address: { address: string; port_value: number; protocol?: 'TCP' };
}

export interface HttpConnectionManager {
  '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
  stat_prefix: string;
  rds: { route_config_name: string; config_source: { ads: Record<string, never>; resource_api_version: 'V3' } };
  /** Typed for proxyless gRPC clients (they reject untyped filters); the gateway's own are not. */
  http_filters: Array<{ name: string; typed_config?: { '@type': string } }>;
  use_remote_address: boolean;
  xff_num_trusted_hops: number;
  server_name: string;
  normalize_path: boolean;
  /** Envoy's `http_protocol_options.accept_http_10`: Istio turns it on only with ISTIO_META_HTTP10. */
  http_protocol_options: { accept_http_10: boolean };
  max_request_headers_kb: number;
}

/**
 * Envoy's tcp_proxy (TCP servers, TLS PASSTHROUGH / AUTO_PASSTHROUGH chains): one cluster or a
 * weighted choice per connection; `idle_timeout` closes a connection with no bytes either way.
 */
export interface TcpProxy {
  '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
  stat_prefix: string;
  cluster?: string;
  weighted_clusters?: { clusters: Array<{ name: string; weight: number }> };
  idle_timeout: Duration;
  /** Never present: lets code read `typed_config.rds` of any network filter. */
  rds?: never;
}

export interface HttpConnectionManagerFilter {
  name: 'envoy.filters.network.http_connection_manager';
  typed_config: HttpConnectionManager;
}

export interface TcpProxyFilter {
  name: 'envoy.filters.network.tcp_proxy';
  typed_config: TcpProxy;
}

export type NetworkFilter = HttpConnectionManagerFilter | TcpProxyFilter;

/** Envoy's tls_inspector listener filter: reads the SNI so that filter chains can match on it. */
export interface ListenerFilter {
  name: 'envoy.filters.listener.tls_inspector';
  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' };
}

export interface FilterChain {
  name?: string;
  filter_chain_match?: { server_names?: string[] };
  /**
   * TLS termination (HTTPS servers): one chain per Gateway server, selected by SNI. TLS
   * passthrough: one chain per `sniHosts` set of a VirtualService tls route (no transport socket).
   */
  transport_socket?: { name: 'envoy.transport_sockets.tls'; typed_config: DownstreamTlsContext };
  filters: NetworkFilter[];
  /**
   * Istio facts: the Gateway server this chain serves (`Gateway/ns/name#server`), its TLS mode
   * and, when a PeerAuthentication applies, its mode (STRICT / PERMISSIVE / DISABLE) and name.
   */
  metadata?: { filter_metadata: { istio: { server: string; tls_mode?: string; mtls_mode?: string; peer_authentication?: string } } };
}

// ---- TLS and secrets (SDS) ------------------------------------------------------------------

/** Envoy's TLS version enum, as Istio maps minProtocolVersion / maxProtocolVersion. */
export type TlsVersion = 'TLS_AUTO' | 'TLSv1_0' | 'TLSv1_1' | 'TLSv1_2' | 'TLSv1_3';

/** A secret fetched over SDS (ADS), by the name Istio gives it. */
export interface SdsSecretConfig {
  name: string;
  sds_config: { ads: Record<string, never>; resource_api_version: 'V3' };
}

export interface DownstreamTlsContext {
  '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
  common_tls_context: {
    tls_params?: { tls_minimum_protocol_version?: TlsVersion; tls_maximum_protocol_version?: TlsVersion; cipher_suites?: string[] };
    alpn_protocols: string[];
    tls_certificate_sds_secret_configs: SdsSecretConfig[];
    /** MUTUAL / OPTIONAL_MUTUAL: the CA secret and the SANs a client certificate must carry. */
    combined_validation_context?: {
      default_validation_context: { match_subject_alt_names?: Array<{ exact: string }> };
      validation_context_sds_secret_config: SdsSecretConfig;
    };
  };
  /** true for MUTUAL; OPTIONAL_MUTUAL verifies a certificate only when the client presents one. */
  require_client_certificate: boolean;
}

/** Envoy's DataSource: a file the data plane reads (and watches), or the PEM text itself. */
export interface DataSource {
  filename?: string;
  inline_string?: string;
}

/**
 * An SDS secret, named as Istio names them: `kubernetes://<credentialName>` (a Secret in the
 * gateway's namespace; `kubernetes://<ns>/<name>` in the Gateway's), `file-cert:<cert>~<key>`,
 * `file-root:<ca>`, and `<...>-cacert` for the CA of a credential.
 */
export interface Secret {
  name: string;
  tls_certificate?: { certificate_chain: DataSource; private_key: DataSource };
  validation_context?: { trusted_ca: DataSource };
  /**
   * Gatehouse extension: the certificate comes from an ACME directory (Gateway annotation
   * `gatehouse.io/acme-directory`) for these hosts, not from the config.
   */
  acme?: AcmeSecretSource;
}

export interface AcmeSecretSource {
  directory_url: string;
  email?: string;
  hosts: string[];
  /** PEM file trusted for the directory's HTTPS (a test CA such as pebble's), absolute. */
  ca_file?: string;
}

/**
 * The engine serving HTTP/1.1 on a plain HTTP or SIMPLE HTTPS port: uWebSockets.js (fast, lax
 * parsing) or node:http (llhttp, strict RFC 9112 parsing). See the README's security section.
 */
export type Http1Engine = 'uws' | 'strict';
export const HTTP1_ENGINES: readonly Http1Engine[] = ['uws', 'strict'];

export interface Listener {
  /** `0.0.0.0_8080`, as Envoy names gateway listeners. */
  name: string;
  address: SocketAddress;
  filter_chains: FilterChain[];
  /** TLS PASSTHROUGH / AUTO_PASSTHROUGH listeners: the tls_inspector, so chains can match on SNI. */
  listener_filters?: ListenerFilter[];
  traffic_direction: 'OUTBOUND';
  /**
   * Istio facts: the protocol of the Gateway servers, which Gateway servers made it; Gatehouse's
   * own (forward proxy, PROXY protocol, the HTTP/1.1 engine its Gateways' annotation asks for).
   */
  metadata: IstioMetadata & { filter_metadata: { istio: { protocol: ListenerProtocol; servers: string[]; forward_proxy?: ForwardProxyConfig; security?: SecurityConfig; proxy_protocol?: boolean; http1_engine?: Http1Engine } } };
}

/**
 * A listener for a proxyless gRPC client, named as the client asks for it (`host:port`), as
 * istiod's grpc generator serves it: an API listener whose HTTP connection manager takes its
 * routes over RDS (`outbound|<port>||<host>`).
 */
export interface ApiListener {
  name: string;
  address: SocketAddress;
  api_listener: { api_listener: HttpConnectionManager };
}

/**
 * What sidecars and proxyless gRPC clients of one namespace see (Istio's sidecar outbound view):
 * routes per service port from the VirtualServices bound to `mesh`, with `exportTo` applied.
 */
export interface SidecarView {
  /** By every name a client may ask for: `<fqdn>:<port>` and, in the service's namespace, `<name>:<port>`... */
  listeners: ReadonlyMap<string, ApiListener>;
  /** `outbound|<port>||<host>` */
  routes: ReadonlyMap<string, RouteConfiguration>;
}

/**
 * Istio security policies that apply to a listener's workload, selected and ordered by resolve()
 * (root namespace: all; the gateway's namespace: when the selector matches its labels), compiled
 * by the data plane (src/security) once per version. Rides in the listener's metadata so that
 * replicas get it over LDS too. Rule fields keep Istio's names (principals, notPaths, ...).
 */
export interface SecurityConfig {
  /** RequestAuthentication jwtRules of every applicable policy (Istio merges them). */
  jwt_rules: JwtRuleConfig[];
  /** AuthorizationPolicies by action, each list in config order. */
  custom: AuthzPolicyConfig[];
  deny: AuthzPolicyConfig[];
  allow: AuthzPolicyConfig[];
  audit: AuthzPolicyConfig[];
  /** Mesh config defaultConfig.gatewayTopology.numTrustedProxies: how remote.ip is read from XFF. */
  num_trusted_proxies: number;
}

export interface JwtRuleConfig {
  /** `namespace/name` of the RequestAuthentication. */
  policy: string;
  issuer: string;
  audiences: string[];
  /** Inline JWKS (wins over jwks_uri, as in Istio). */
  jwks?: string;
  jwks_uri?: string;
  /** JWKS fetch timeout. */
  timeout_ms: number;
  /** Where the token is read; both empty: `Authorization: Bearer`, then `access_token` query param. */
  from_headers: Array<{ name: string; prefix: string }>;
  from_params: string[];
  from_cookies: string[];
  output_payload_to_header?: string;
  output_claim_to_headers: Array<{ header: string; claim: string }>;
  forward_original_token: boolean;
  /**
   * Claims besides Istio's default `permission` and `scope` whose space-delimited string value is
   * a list in the verified payload (Istio `spaceDelimitedClaims`, Envoy's
   * normalize_payload_in_metadata); absent when none.
   */
  space_delimited_claims?: string[];
}

export interface AuthzPolicyConfig {
  /** `namespace/name` of the AuthorizationPolicy. */
  policy: string;
  /** Istio rules; empty: `spec: {}` / no rules (an ALLOW policy without rules matches nothing). */
  rules: AuthzRuleConfig[];
  /** CUSTOM: the extension provider (mesh config extensionProviders, envoyExtAuthzHttp). */
  provider?: ExtAuthzConfig;
}

export interface AuthzRuleConfig {
  /**
   * Each entry is one `source` (principals, requestPrincipals, namespaces, serviceAccounts — always
   * `namespace/name` —, trustDomains, ipBlocks, remoteIpBlocks, and not* forms).
   */
  from: Array<Record<string, string[]>>;
  /** Each entry is one `operation` (hosts, ports, methods, paths, and not* forms). */
  to: Array<Record<string, string[]>>;
  when: Array<{ key: string; values: string[]; not_values: string[] }>;
}

/** Istio's envoyExtAuthzHttp extension provider. */
export interface ExtAuthzConfig {
  name: string;
  service: string;
  port: number;
  path_prefix: string;
  timeout_ms: number;
  fail_open: boolean;
  status_on_error: number;
  include_request_headers_in_check: string[];
  include_additional_headers_in_check: Record<string, string>;
  headers_to_upstream_on_allow: string[];
  headers_to_downstream_on_deny: string[];
  headers_to_downstream_on_allow: string[];
}

/** Gatehouse extension: an HTTP egress port that is also a forward proxy (absolute-form, CONNECT). */
export interface ForwardProxyConfig {
  /** Hosts not in the registry: REGISTRY_ONLY refuses them (502), ALLOW_ANY passes them through. */
  policy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  /** CONNECT targets: registered hosts (`*.` wildcards allowed) and their declared ports. */
  connect: Array<{ host: string; ports: number[] }>;
}

// ---- Routes ---------------------------------------------------------------------------------

export interface StringMatcher {
  exact?: string;
  prefix?: string;
  safe_regex?: { regex: string };
  ignore_case?: boolean;
}

export interface HeaderMatcher {
  name: string;
  string_match?: StringMatcher;
  present_match?: boolean;
  invert_match?: boolean;
}

export interface QueryParameterMatcher {
  name: string;
  string_match?: StringMatcher;
  present_match?: boolean;
}

/**
 * envoy.type.matcher.v3.ValueMatcher: one of its members. Istio's JWT claim matches use
 * `or_match` of [`list_match.one_of` a string matcher, the string matcher] (a list claim matches
 * when an element does, a string claim when it does; other values never).
 */
export interface ValueMatcher {
  null_match?: Record<string, never>;
  double_match?: { exact?: number; range?: { start: number; end: number } };
  string_match?: StringMatcher;
  bool_match?: boolean;
  present_match?: boolean;
  list_match?: { one_of: ValueMatcher };
  or_match?: { value_matchers: ValueMatcher[] };
}

/**
 * envoy.type.matcher.v3.MetadataMatcher: the value at `path` (keys into Structs) of the dynamic
 * metadata `filter` set for this request; `invert` flips the result (a value that is absent
 * matches an inverted matcher).
 */
export interface MetadataMatcher {
  filter: string;
  path: Array<{ key: string }>;
  value: ValueMatcher;
  invert?: boolean;
}

/** Envoy's JWT filter, and the key under which Istio has it put the verified payload (`payload_in_metadata`). */
export const JWT_AUTHN_FILTER = 'envoy.filters.http.jwt_authn';
export const JWT_PAYLOAD_METADATA_KEY = 'payload';

/**
 * A request's dynamic metadata as route matching reads it (Envoy's `filter_metadata`): per filter
 * name, a Struct as plain JSON. The JWT filter sets `{[JWT_AUTHN_FILTER]: {payload: <claims>}}`.
 */
export type FilterMetadata = Readonly<Record<string, Readonly<Record<string, unknown>>>>;

export interface RouteMatch {
  prefix?: string;
  path?: string;
  safe_regex?: { regex: string };
  case_sensitive: boolean;
  headers: HeaderMatcher[];
  query_parameters: QueryParameterMatcher[];
  /** JWT claim matches (Istio `@request.auth.claims...` keys); absent when none. */
  dynamic_metadata?: MetadataMatcher[];
}

export interface HeaderValueOption {
  header: { key: string; value: string };
  /** Envoy's append_action: `APPEND_IF_EXISTS_OR_ADD` for Istio `add`, `OVERWRITE_IF_EXISTS_OR_ADD` for `set`. */
  append_action: 'APPEND_IF_EXISTS_OR_ADD' | 'OVERWRITE_IF_EXISTS_OR_ADD';
}

export interface WeightedCluster {
  name: string;
  weight: number;
  request_headers_to_add?: HeaderValueOption[];
  request_headers_to_remove?: string[];
  response_headers_to_add?: HeaderValueOption[];
  response_headers_to_remove?: string[];
}

/** Envoy's FractionalPercent; Istio writes percentages as parts per million. */
export interface FractionalPercent {
  numerator: number;
  denominator: 'MILLION';
}

/** envoy.extensions.filters.http.fault.v3.HTTPFault, per route. */
export interface HttpFault {
  delay?: { fixed_delay: Duration; percentage: FractionalPercent };
  abort?: { http_status?: number; grpc_status?: number; percentage: FractionalPercent };
}

/** envoy.extensions.filters.http.cors.v3.CorsPolicy, per route. */
export interface CorsPolicy {
  allow_origin_string_match: StringMatcher[];
  allow_methods?: string;
  allow_headers?: string;
  expose_headers?: string;
  /** Seconds, as a string (Envoy's field type). */
  max_age?: string;
  allow_credentials?: boolean;
  /** Istio unmatchedPreflights FORWARD (default): preflights from origins not allowed go upstream. */
  forward_not_matching_preflights: boolean;
}

export interface RequestMirrorPolicy {
  cluster: string;
  runtime_fraction: { default_value: FractionalPercent };
}

export interface RetryPolicy {
  retry_on: string;
  num_retries: number;
  per_try_timeout?: Duration;
  retriable_status_codes?: number[];
  retry_host_predicate?: Array<{ name: 'envoy.retry_host_predicates.previous_hosts' }>;
  host_selection_retry_max_attempts?: number;
}

export interface RouteAction {
  cluster?: string;
  weighted_clusters?: { clusters: WeightedCluster[]; total_weight: number };
  /** Istio sets SERVICE_UNAVAILABLE: a route to a missing cluster answers 503 NC. */
  cluster_not_found_response_code: 'SERVICE_UNAVAILABLE';
  /** Zero means no timeout (Istio's default). */
  timeout: Duration;
  retry_policy?: RetryPolicy;
  prefix_rewrite?: string;
  regex_rewrite?: { pattern: { regex: string }; substitution: string };
  host_rewrite_literal?: string;
  request_mirror_policies?: RequestMirrorPolicy[];
  max_stream_duration?: { max_stream_duration?: Duration; grpc_timeout_header_max?: Duration };
}

export interface RedirectAction {
  scheme_redirect?: string;
  host_redirect?: string;
  port_redirect?: number;
  path_redirect?: string;
  prefix_rewrite?: string;
  /**
   * Gatehouse extension for Istio's derivePort FROM_REQUEST_PORT (Envoy has no field for it): the
   * Location keeps the port the request came in on.
   */
  port_from_request?: boolean;
  response_code: 'MOVED_PERMANENTLY' | 'FOUND' | 'SEE_OTHER' | 'TEMPORARY_REDIRECT' | 'PERMANENT_REDIRECT';
}

export interface DirectResponseAction {
  status: number;
  body?: { inline_string?: string; inline_bytes?: string };
}

export interface Route {
  /** The Istio HTTPRoute name (or `<vs>.<index>` when unnamed), as Envoy's ROUTE_NAME. */
  name: string;
  match: RouteMatch;
  route?: RouteAction;
  redirect?: RedirectAction;
  direct_response?: DirectResponseAction;
  request_headers_to_add?: HeaderValueOption[];
  request_headers_to_remove?: string[];
  response_headers_to_add?: HeaderValueOption[];
  response_headers_to_remove?: string[];
  decorator?: { operation: string };
  typed_per_filter_config?: {
    'envoy.filters.http.fault'?: HttpFault;
    'envoy.filters.http.cors'?: CorsPolicy;
  };
  metadata: IstioMetadata & { filter_metadata: { istio: { config: string } } };
}

export interface VirtualHost {
  /** `<host>:<port>`, as Istio names gateway virtual hosts. */
  name: string;
  domains: string[];
  routes: Route[];
  include_request_attempt_count: boolean;
}

export interface RouteConfiguration {
  /** `http.<port>` for the plain-HTTP servers of one port. */
  name: string;
  virtual_hosts: VirtualHost[];
  validate_clusters: boolean;
}

// ---- Clusters and endpoints -----------------------------------------------------------------

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' | 'RING_HASH' | 'MAGLEV' | 'CLUSTER_PROVIDED';

export interface CircuitBreakerThresholds {
  max_connections: number;
  max_pending_requests: number;
  max_requests: number;
  max_retries: number;
}

export interface OutlierDetectionConfig {
  consecutive_5xx: number;
  consecutive_gateway_failure: number;
  enforcing_consecutive_5xx: number;
  enforcing_consecutive_gateway_failure: number;
  interval: Duration;
  base_ejection_time: Duration;
  max_ejection_percent: number;
  /** Istio's minHealthPercent becomes Envoy's panic threshold on the cluster. */
  split_external_local_origin_errors: boolean;
  consecutive_local_origin_failure: number;
}

export interface HashPolicy {
  header?: { header_name: string };
  cookie?: { name: string; path?: string; ttl?: Duration };
  connection_properties?: { source_ip: boolean };
  query_parameter?: { name: string };
}

/** SDS names of the mesh identity (ISTIO_MUTUAL), as istio-agent serves them. */
export const MESH_CERT_SECRET = 'default';
export const MESH_ROOT_SECRET = 'ROOTCA';

export interface UpstreamTlsContext {
  sni?: string;
  common_tls_context: {
    tls_certificates?: Array<{ certificate_chain: { filename: string }; private_key: { filename: string } }>;
    validation_context?: { trusted_ca?: { filename: string }; match_subject_alt_names?: Array<{ exact: string }> };
    /** ISTIO_MUTUAL: the workload certificate over SDS (`default`). */
    tls_certificate_sds_secret_configs?: SdsSecretConfig[];
    /** ISTIO_MUTUAL: the mesh root over SDS (`ROOTCA`) and the SANs the server must carry. */
    combined_validation_context?: {
      default_validation_context: { match_subject_alt_names?: Array<{ exact: string }> };
      validation_context_sds_secret_config: SdsSecretConfig;
    };
  };
  /** Gatehouse: `insecureSkipVerify` from the DestinationRule. */
  insecure_skip_verify?: boolean;
}

export interface ClusterIstioMetadata {
  /** FQDN of the service this cluster belongs to. */
  host: string;
  /** Short name and namespace, for destination_service_name / _namespace. */
  name: string;
  namespace: string;
  port: number;
  subset: string;
  /** `registry` when from a ServiceEntry, `blackhole` / `passthrough` for the special clusters. */
  kind: 'service' | 'blackhole' | 'passthrough';
  /** DestinationRule providing the policy, as `namespace/name`, or '' when none. */
  destination_rule: string;
  /** HTTP `hash_policy` of the consistent-hash load balancer, applied by the router. */
  hash_policy?: HashPolicy[];
  /** minHealthPercent of outlier detection. */
  min_health_percent?: number;
}

export interface Cluster {
  /** `outbound|<port>|<subset>|<host>` */
  name: string;
  type: 'EDS' | 'STRICT_DNS' | 'LOGICAL_DNS' | 'ORIGINAL_DST' | 'STATIC';
  eds_cluster_config?: { service_name: string; eds_config: { ads: Record<string, never>; resource_api_version: 'V3' } };
  connect_timeout: Duration;
  lb_policy: LbPolicy;
  ring_hash_lb_config?: { minimum_ring_size: number };
  maglev_lb_config?: { table_size: number };
  circuit_breakers: { thresholds: CircuitBreakerThresholds[] };
  outlier_detection?: OutlierDetectionConfig;
  common_http_protocol_options: { idle_timeout: Duration; max_requests_per_connection: number };
  /**
   * Present when the upstream speaks HTTP/2 (h2c, or h2 over TLS): service ports with protocol
   * GRPC, GRPC-WEB or HTTP2, or a DestinationRule h2UpgradePolicy UPGRADE, as Istio sets it.
   */
  http2_protocol_options?: { max_concurrent_streams?: number };
  transport_socket?: { name: 'envoy.transport_sockets.tls'; typed_config: UpstreamTlsContext };
  metadata: { filter_metadata: { istio: ClusterIstioMetadata } };
}

export interface LbEndpoint {
  endpoint: { address: SocketAddress };
  health_status: 'HEALTHY' | 'UNKNOWN';
  load_balancing_weight: number;
  /** Istio facts about the workload behind the endpoint (labels, workload name, namespace). */
  metadata: { filter_metadata: { istio: { labels: Record<string, string>; workload: string; namespace: string } } };
}

export interface LocalityLbEndpoints {
  locality: { region: string; zone: string; sub_zone: string };
  lb_endpoints: LbEndpoint[];
  load_balancing_weight: number;
  priority: number;
}

export interface ClusterLoadAssignment {
  cluster_name: string;
  endpoints: LocalityLbEndpoints[];
}

// ---- Telemetry ------------------------------------------------------------------------------

/**
 * The observability configuration of this gateway: the Telemetry API (root namespace, the
 * gateway's namespace, a selector matching its labels) over the mesh config, resolved as istiod
 * resolves it for a gateway (Istio's CLIENT mode). Envoy-shaped where Envoy has a shape: the HTTP
 * connection manager's `access_log` and `tracing`, and Istio's stats plugin config.
 */
export interface TelemetryConfig {
  /**
   * True when the Telemetry API decides (a Telemetry applies, or the mesh config names default
   * providers); false: the legacy mesh config settings apply (accessLogFile, defaultConfig.tracing)
   * and everything below is a function of the mesh config alone.
   */
  api: boolean;
  /** The Telemetry resources that apply, in Istio's order (root namespace, namespace, selector): `namespace/name`. */
  policies: string[];
  /**
   * HTTP access logs (the HCM's `access_log`, disabled ones left out). Absent: the Telemetry API
   * configures none and the mesh config's `accessLogFile` applies (Istio's fallback); empty: none.
   */
  access_log?: AccessLogConfig[];
  /** Istio's stats plugin config for the Prometheus provider (absent: the standard metrics as they are). */
  stats?: StatsConfig;
  /** The HCM `tracing` a gateway gets (absent: tracing is off — `enableTracing: false`, or disabled by Telemetry). */
  tracing?: TracingConfig;
}

export const FILE_ACCESS_LOG = 'envoy.access_loggers.file';
export const CEL_LOG_FILTER = 'envoy.access_loggers.extension_filters.cel';

/** envoy.config.accesslog.v3.AccessLog with a FileAccessLog and an optional CEL ExpressionFilter. */
export interface AccessLogConfig {
  name: typeof FILE_ACCESS_LOG;
  filter?: { extension_filter: { name: typeof CEL_LOG_FILTER; typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter'; expression: string } } };
  typed_config: {
    '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog';
    path: string;
    /** SubstitutionFormatString: a text format, or JSON keys → operators. */
    log_format: { text_format_source?: { inline_string: string }; json_format?: Record<string, unknown>; omit_empty_values?: boolean };
  };
  /** Istio facts: the extension provider it comes from. */
  metadata: { filter_metadata: { istio: { provider: string } } };
}

/**
 * istio.stats PluginConfig (Istio's stats filter): per metric, `drop` (disabled), tags to remove and
 * dimensions to add or replace (name → CEL expression). `disabled`: no istio_* metric at all.
 */
export interface StatsConfig {
  disabled: boolean;
  metrics: StatsMetricConfig[];
}

export interface StatsMetricConfig {
  /** Prometheus name without the `istio_` prefix: `requests_total`, `request_duration_milliseconds`, ... */
  name: string;
  drop: boolean;
  tags_to_remove: string[];
  dimensions: Record<string, string>;
}

/** envoy.config.trace.v3 / HCM Tracing, as istiod builds it for a gateway. */
export interface TracingConfig {
  /** Percent of requests sampled (Telemetry randomSamplingPercentage, else defaultConfig.tracing.sampling, else 1). */
  random_sampling: { value: number };
  /** Envoy's client_sampling / overall_sampling left at their default (100%). */
  custom_tags: TracingCustomTag[];
  /** The gateway's name on its spans: Envoy's node cluster from its bootstrap (`<app>.<namespace>`). */
  service_cluster: string;
  max_path_tag_length?: number;
  /** Where spans go; absent: no provider (spans are not exported). */
  provider?: TracingProvider;
  /** A gateway starts a child span for its upstream request (Istio's `startChildSpan` for routers). */
  spawn_upstream_span: boolean;
  /** Telemetry `useRequestIdForTraceSampling` (default true). */
  use_request_id_for_trace_sampling: boolean;
  /** Telemetry `enableIstioTags` (default true). */
  enable_istio_tags: boolean;
  /** Telemetry `disableContextPropagation`. */
  no_context_propagation?: boolean;
}

export interface TracingCustomTag {
  tag: string;
  literal?: { value: string };
  environment?: { name: string; default_value?: string };
  request_header?: { name: string; default_value?: string };
  /** Envoy's formatter tag (`%REQ(...)%`...). */
  value?: string;
}

export interface TracingProvider {
  name: 'envoy.tracers.zipkin' | 'envoy.tracers.opentelemetry';
  typed_config: ZipkinTracerConfig | OpenTelemetryTracerConfig;
  /** Istio facts: the extension provider it comes from. */
  metadata: { filter_metadata: { istio: { provider: string } } };
}

export interface TracerHeader {
  key: string;
  value?: string;
  /** Istio's `envName`: the value of this environment variable of the gateway. */
  env_name?: string;
}

export interface ZipkinTracerConfig {
  '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig';
  /** The collector: `http://<service>:<port><path>` (path default /api/v2/spans). */
  collector_service: { http_uri: { uri: string; timeout: Duration; cluster?: string }; request_headers_to_add: TracerHeader[] };
  collector_endpoint_version: 'HTTP_JSON';
  trace_id_128bit: boolean;
  shared_span_context: boolean;
  trace_context_option: 'USE_B3' | 'USE_B3_WITH_W3C_PROPAGATION';
  max_tag_length?: number;
}

export interface OpenTelemetryTracerConfig {
  '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig';
  /** OTLP over gRPC (`<service>:<port>`), or over HTTP (`http://<service>:<port><path>`). */
  grpc_service?: { authority: string; timeout?: Duration; initial_metadata: TracerHeader[]; cluster_name?: string };
  http_service?: { http_uri: { uri: string; timeout: Duration; cluster?: string }; request_headers_to_add: TracerHeader[] };
  /** The gateway's service name on its spans. */
  service_name: string;
  max_tag_length?: number;
}

// ---- Snapshot -------------------------------------------------------------------------------

export interface Snapshot {
  /** Monotonic per process, plus the content hash, e.g. `3-5f1e0c2a`. */
  readonly version: string;
  /** Content hash of the resolved config: identical config, identical hash. */
  readonly hash: string;
  readonly listeners: readonly Listener[];
  readonly routes: ReadonlyMap<string, RouteConfiguration>;
  readonly clusters: ReadonlyMap<string, Cluster>;
  readonly endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
  /** SDS secrets the listeners name; file sources are read (and watched) by the data plane. */
  readonly secrets: ReadonlyMap<string, Secret>;
  /**
   * The sidecar view per client namespace (a namespace with no resources of its own sees what
   * the key '' holds: only what is exported to every namespace). Served over xDS only.
   */
  readonly sidecar: ReadonlyMap<string, SidecarView>;
  readonly mesh: MeshConfig;
  /** Access logging, metric overrides and tracing for this gateway (Telemetry API over the mesh config). */
  readonly telemetry: TelemetryConfig;
  /** Things the translation could not honour (reported by `validate` and logged), never silently dropped. */
  readonly warnings: readonly Problem[];
}

export const ZERO_DURATION: Duration = Object.freeze({ seconds: 0, nanos: 0 });

export function durationFromMs(ms: number): Duration {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function durationToMs(d: Duration | undefined): number {
  if (!d) return 0;
  return d.seconds * 1000 + d.nanos / 1e6;
}

/** Cluster name as Istio builds it: `outbound|<port>|<subset>|<host>`. */
export function clusterName(port: number, subset: string, host: string): string {
  return `outbound|${port}|${subset}|${host}`;
}

export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster';
