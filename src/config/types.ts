// The configuration model: Istio/Kubernetes resources as read from YAML, each one knowing where it
// came from so that every problem can be reported as `<file>:<line>: <kind>/<ns>/<name>: <path>: <msg>`.

export type FieldPath = ReadonlyArray<string | number>;

export interface ObjectMeta {
  name: string;
  namespace: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** Where a resource came from, and a way to find the line of any field inside it. */
export interface SourceRef {
  /** The file as named on the command line; '' for an object read from the Kubernetes API. */
  file: string;
  /** 1-based line of the document start (the `apiVersion`/`kind` line). */
  line: number;
  /** Line of the node at `path` (relative to the resource root), or of its nearest existing ancestor. */
  lineOf(path: FieldPath): number;
  /** An object read from the Kubernetes API (`--kubernetes`): its resourceVersion there. */
  api?: { resourceVersion: string };
}

/** The source of an object read from the Kubernetes API: no file, no lines. */
export function apiSource(resourceVersion: string): SourceRef {
  return { file: '', line: 0, lineOf: () => 0, api: { resourceVersion } };
}

/** Where a resource is defined, for messages: `file:line`, or `the Kubernetes API`. */
export function describeSource(s: Pick<SourceRef, 'file' | 'line' | 'api'>): string {
  return s.api ? 'the Kubernetes API' : `${s.file}:${s.line}`;
}

export interface Resource<S = unknown> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  /** `spec` for Istio kinds; for Secret/ConfigMap the whole document (data, stringData, type). */
  spec: S;
  source: SourceRef;
}

export interface Problem {
  file: string;
  line: number;
  /** `Kind/namespace/name`, or `yaml` for a syntax error, or '' when it is about no resource. */
  resource: string;
  /** Field path written like `spec.http[0].route[1].weight`; empty for syntax errors. */
  path: string;
  message: string;
  severity: 'error' | 'warning';
}

/**
 * `file:line: Kind/ns/name: path: message`; a problem of an object read from the Kubernetes API
 * (no file) reads `Kind/ns/name: path: message`.
 */
export function formatProblem(p: Problem): string {
  if (p.resource === 'yaml') return `${p.file}:${p.line}: yaml: ${p.message}`;
  const parts = p.file === '' ? [] : [`${p.file}:${p.line}`];
  if (p.resource) parts.push(p.resource);
  if (p.path) parts.push(p.path);
  parts.push(p.message);
  return parts.join(': ');
}

export function formatPath(path: FieldPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}

export function resourceId(r: Pick<Resource, 'kind' | 'metadata'>): string {
  return `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
}

// ---------------------------------------------------------------------------------------------
// networking.istio.io specs (the fields Gatehouse reads; unknown fields are rejected by validation)

export interface StringMatch {
  exact?: string;
  prefix?: string;
  regex?: string;
}

export interface PortSelector {
  number?: number;
}

export interface Destination {
  host: string;
  subset?: string;
  port?: PortSelector;
}

export interface HeaderOperations {
  set?: Record<string, string>;
  add?: Record<string, string>;
  remove?: string[];
}

export interface Headers {
  request?: HeaderOperations;
  response?: HeaderOperations;
}

export interface HTTPRouteDestination {
  destination: Destination;
  weight?: number;
  headers?: Headers;
}

export interface HTTPMatchRequest {
  name?: string;
  uri?: StringMatch;
  scheme?: StringMatch;
  method?: StringMatch;
  authority?: StringMatch;
  headers?: Record<string, StringMatch>;
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
  queryParams?: Record<string, StringMatch>;
  ignoreUriCase?: boolean;
  withoutHeaders?: Record<string, StringMatch>;
  sourceNamespace?: string;
  statPrefix?: string;
}

export interface HTTPRedirect {
  uri?: string;
  authority?: string;
  port?: number;
  derivePort?: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT';
  scheme?: string;
  redirectCode?: number;
  prefixRewrite?: string;
}

export interface HTTPDirectResponse {
  status: number;
  body?: { string?: string; bytes?: string };
}

export interface HTTPRewrite {
  uri?: string;
  authority?: string;
  uriRegexRewrite?: { match: string; rewrite: string };
}

export interface HTTPRetry {
  attempts?: number;
  perTryTimeout?: string;
  retryOn?: string;
  retryRemoteLocalities?: boolean;
  retryIgnorePreviousHosts?: boolean;
  backoff?: string;
}

export interface Percent {
  value?: number;
}

export interface HTTPFaultInjection {
  delay?: { fixedDelay?: string; exponentialDelay?: string; percentage?: Percent; percent?: number };
  abort?: { httpStatus?: number; grpcStatus?: string; http2Error?: string; percentage?: Percent };
}

export interface CorsPolicy {
  allowOrigins?: StringMatch[];
  allowOrigin?: string[];
  allowMethods?: string[];
  allowHeaders?: string[];
  exposeHeaders?: string[];
  maxAge?: string;
  allowCredentials?: boolean;
  unmatchedPreflights?: 'UNSPECIFIED' | 'FORWARD' | 'IGNORE';
}

export interface HTTPMirrorPolicy {
  destination: Destination;
  percentage?: Percent;
}

export interface HTTPRoute {
  name?: string;
  match?: HTTPMatchRequest[];
  route?: HTTPRouteDestination[];
  redirect?: HTTPRedirect;
  directResponse?: HTTPDirectResponse;
  delegate?: { name?: string; namespace?: string };
  rewrite?: HTTPRewrite;
  timeout?: string;
  retries?: HTTPRetry;
  fault?: HTTPFaultInjection;
  mirror?: Destination;
  mirrors?: HTTPMirrorPolicy[];
  mirrorPercentage?: Percent;
  mirrorPercent?: number;
  /** The CRD's (protobuf) name of mirrorPercent. */
  mirror_percent?: number;
  corsPolicy?: CorsPolicy;
  headers?: Headers;
}

export interface L4MatchAttributes {
  destinationSubnets?: string[];
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
  sourceNamespace?: string;
  sourceSubnet?: string;
}

export interface RouteDestination {
  destination: Destination;
  weight?: number;
}

export interface TLSRoute {
  match: Array<L4MatchAttributes & { sniHosts: string[] }>;
  route?: RouteDestination[];
}

export interface TCPRoute {
  match?: L4MatchAttributes[];
  route?: RouteDestination[];
}

export interface VirtualServiceSpec {
  hosts?: string[];
  gateways?: string[];
  http?: HTTPRoute[];
  tls?: TLSRoute[];
  tcp?: TCPRoute[];
  exportTo?: string[];
}

/** Istio's port protocols (case-insensitive in YAML). */
export type ServerProtocol = 'HTTP' | 'HTTPS' | 'GRPC' | 'GRPC-WEB' | 'HTTP2' | 'HTTP_PROXY' | 'MONGO' | 'MYSQL' | 'REDIS' | 'TCP' | 'TLS' | 'UDP';

export interface ServerTLSSettings {
  httpsRedirect?: boolean;
  mode?: 'PASSTHROUGH' | 'SIMPLE' | 'MUTUAL' | 'AUTO_PASSTHROUGH' | 'ISTIO_MUTUAL' | 'OPTIONAL_MUTUAL';
  serverCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  caCrl?: string;
  credentialName?: string;
  credentialNames?: string[];
  tlsCertificates?: Array<{ serverCertificate?: string; privateKey?: string; caCertificates?: string }>;
  caCertCredentialName?: string;
  insecureSkipVerify?: boolean;
  subjectAltNames?: string[];
  verifyCertificateSpki?: string[];
  verifyCertificateHash?: string[];
  minProtocolVersion?: string;
  maxProtocolVersion?: string;
  cipherSuites?: string[];
}

export interface GatewayServer {
  port: { number: number; protocol: string; name?: string; targetPort?: number };
  bind?: string;
  hosts: string[];
  tls?: ServerTLSSettings;
  defaultEndpoint?: string;
  name?: string;
}

export interface GatewaySpec {
  servers?: GatewayServer[];
  selector?: Record<string, string>;
}

export interface LoadBalancerSettings {
  simple?: 'UNSPECIFIED' | 'LEAST_CONN' | 'RANDOM' | 'PASSTHROUGH' | 'ROUND_ROBIN' | 'LEAST_REQUEST';
  consistentHash?: {
    httpHeaderName?: string;
    httpCookie?: { name: string; path?: string; ttl?: string; attributes?: Array<{ name: string; value?: string }> };
    useSourceIp?: boolean;
    httpQueryParameterName?: string;
    ringHash?: { minimumRingSize?: number };
    maglev?: { tableSize?: number };
    minimumRingSize?: number;
  };
  localityLbSetting?: unknown;
  zoneAwareLbSetting?: unknown;
  /** Deprecated (use warmup); not implemented. */
  warmupDurationSecs?: string;
  warmup?: { duration: string; minimumPercent?: number; aggression?: number };
}

export interface ConnectionPoolSettings {
  tcp?: {
    maxConnections?: number;
    connectTimeout?: string;
    tcpKeepalive?: { probes?: number; time?: string; interval?: string };
    maxConnectionDuration?: string;
    idleTimeout?: string;
  };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeout?: string;
    h2UpgradePolicy?: 'DEFAULT' | 'DO_NOT_UPGRADE' | 'UPGRADE';
    useClientProtocol?: boolean;
    maxConcurrentStreams?: number;
    http2KeepAlive?: { interval?: string; timeout?: string };
  };
}

export interface OutlierDetection {
  splitExternalLocalOriginErrors?: boolean;
  consecutiveLocalOriginFailures?: number;
  consecutiveGatewayErrors?: number;
  consecutive5xxErrors?: number;
  consecutiveErrors?: number;
  interval?: string;
  baseEjectionTime?: string;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
  outlierDetectionHttpErrorCodes?: number[];
}

export interface ClientTLSSettings {
  mode?: 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  clientCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  caCrl?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  sni?: string;
  insecureSkipVerify?: boolean;
}

export interface TrafficPolicy {
  loadBalancer?: LoadBalancerSettings;
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  tls?: ClientTLSSettings;
  portLevelSettings?: Array<Pick<TrafficPolicy, 'loadBalancer' | 'connectionPool' | 'outlierDetection' | 'tls'> & { port?: PortSelector }>;
  tunnel?: unknown;
  proxyProtocol?: unknown;
  retryBudget?: unknown;
}

export interface Subset {
  name: string;
  labels?: Record<string, string>;
  trafficPolicy?: TrafficPolicy;
}

export interface DestinationRuleSpec {
  host: string;
  trafficPolicy?: TrafficPolicy;
  subsets?: Subset[];
  exportTo?: string[];
  workloadSelector?: { matchLabels?: Record<string, string> };
}

export interface ServicePort {
  number: number;
  /** Unset or '': Istio sniffs the protocol. */
  protocol?: string;
  name: string;
  targetPort?: number;
}

export interface WorkloadEntrySpec {
  address?: string;
  ports?: Record<string, number>;
  labels?: Record<string, string>;
  network?: string;
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

export interface ServiceEntrySpec {
  hosts: string[];
  addresses?: string[];
  ports?: ServicePort[];
  location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  resolution?: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN' | 'DYNAMIC_DNS';
  endpoints?: WorkloadEntrySpec[];
  workloadSelector?: { labels?: Record<string, string> };
  exportTo?: string[];
  subjectAltNames?: string[];
}

export interface SidecarSpec {
  workloadSelector?: { labels?: Record<string, string> };
  ingress?: unknown[];
  egress?: Array<{ port?: unknown; bind?: string; captureMode?: string; hosts: string[] }>;
  inboundConnectionPool?: ConnectionPoolSettings;
  outboundTrafficPolicy?: { mode?: 'ALLOW_ANY' | 'REGISTRY_ONLY'; egressProxy?: Destination };
}

// ---------------------------------------------------------------------------------------------
// Kubernetes kinds of the service registry (`--kubernetes`): the fields Gatehouse reads. The
// Resource `spec` of these kinds is the whole document, as the API server returned it (trimmed,
// see src/config/kubernetes/objects.ts); the API server has validated them.

export interface KubeServicePort {
  name?: string;
  port: number;
  /** A port number or the name of a container port; Kubernetes defaults it to `port`. */
  targetPort?: number | string;
  /** TCP (default), UDP or SCTP. */
  protocol?: string;
  appProtocol?: string;
}

export interface KubeServiceDocument {
  metadata: ObjectMeta;
  spec: {
    type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
    /** `None`: a headless Service. */
    clusterIP?: string;
    clusterIPs?: string[];
    externalName?: string;
    selector?: Record<string, string>;
    ports?: KubeServicePort[];
    publishNotReadyAddresses?: boolean;
    internalTrafficPolicy?: string;
    trafficDistribution?: string;
  };
}

export interface KubeEndpoint {
  addresses: string[];
  /** Absent means ready (the API's "unknown", read as ready by consumers, Istio included). */
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  targetRef?: { kind?: string; name?: string; namespace?: string };
  nodeName?: string;
  zone?: string;
}

export interface KubeEndpointSliceDocument {
  metadata: ObjectMeta;
  addressType?: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints?: KubeEndpoint[] | null;
  /** The Service's ports as the EndpointSlice controller resolved them (a named targetPort made a number). */
  ports?: Array<{ name?: string | null; port?: number | null; protocol?: string; appProtocol?: string }> | null;
}

export interface KubeContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}

export interface KubePodDocument {
  metadata: ObjectMeta;
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    containers?: Array<{ ports?: KubeContainerPort[] }>;
    /** Native sidecars (restartPolicy Always) count for their ports. */
    initContainers?: Array<{ restartPolicy?: string; ports?: KubeContainerPort[] }>;
  };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }>; conditions?: Array<{ type: string; status: string }> };
}

/** The parts of Istio's MeshConfig that Gatehouse reads (`--mesh-config`, or ConfigMap `istio`). */
export interface MeshConfig {
  rootNamespace: string;
  outboundTrafficPolicy: { mode: 'ALLOW_ANY' | 'REGISTRY_ONLY' };
  accessLogFile: string;
  accessLogEncoding: 'TEXT' | 'JSON';
  accessLogFormat: string;
  defaultConfig: { tracing?: ProxyTracingConfig; gatewayTopology?: { numTrustedProxies?: number } };
  extensionProviders: unknown[];
  trustDomain: string;
  /**
   * The providers the Telemetry API uses where a Telemetry names none (istio's `defaultProviders`).
   * Optional so that a mesh config without it reads (and hashes) as before.
   */
  defaultProviders?: { tracing?: string[]; metrics?: string[]; accessLogging?: string[] };
  /** Istio's `enableTracing` (default true): tracing when no Telemetry configures it. */
  enableTracing?: boolean;
}

/** ProxyConfig `tracing` (mesh config `defaultConfig.tracing`): the legacy tracing settings Gatehouse reads. */
export interface ProxyTracingConfig {
  /** Percent of requests sampled when nothing else decides (Istio's default 1). */
  sampling?: number;
  /** Custom tags (literal, environment, header), as the Telemetry API's. */
  custom_tags?: Record<string, TelemetryCustomTag>;
  customTags?: Record<string, TelemetryCustomTag>;
  max_path_tag_length?: number;
  maxPathTagLength?: number;
  [other: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// telemetry.istio.io Telemetry (v1, v1alpha1)

export type WorkloadMode = 'CLIENT_AND_SERVER' | 'CLIENT' | 'SERVER';

export interface TelemetryCustomTag {
  literal?: { value: string };
  environment?: { name: string; defaultValue?: string };
  header?: { name: string; defaultValue?: string };
  formatter?: { value: string };
}

export interface TelemetryTracing {
  match?: { mode?: WorkloadMode };
  providers?: Array<{ name: string }>;
  randomSamplingPercentage?: number;
  disableSpanReporting?: boolean;
  customTags?: Record<string, TelemetryCustomTag>;
  useRequestIdForTraceSampling?: boolean;
  enableIstioTags?: boolean;
  disableContextPropagation?: boolean;
}

export interface TelemetryMetricsOverride {
  match?: { metric?: string; customMetric?: string; mode?: WorkloadMode };
  disabled?: boolean;
  tagOverrides?: Record<string, { operation?: 'UPSERT' | 'REMOVE'; value?: string }>;
}

export interface TelemetryMetrics {
  providers?: Array<{ name: string }>;
  overrides?: TelemetryMetricsOverride[];
  reportingInterval?: string;
}

export interface TelemetryAccessLogging {
  match?: { mode?: WorkloadMode };
  providers?: Array<{ name: string }>;
  disabled?: boolean;
  filter?: { expression?: string };
}

export interface TelemetrySpec {
  selector?: { matchLabels?: Record<string, string> };
  targetRef?: unknown;
  targetRefs?: unknown[];
  tracing?: TelemetryTracing[];
  metrics?: TelemetryMetrics[];
  accessLogging?: TelemetryAccessLogging[];
}

export const DEFAULT_MESH_CONFIG: MeshConfig = Object.freeze({
  rootNamespace: 'istio-system',
  outboundTrafficPolicy: { mode: 'ALLOW_ANY' },
  accessLogFile: '',
  accessLogEncoding: 'TEXT',
  accessLogFormat: '',
  defaultConfig: {},
  extensionProviders: [],
  trustDomain: 'cluster.local',
}) as MeshConfig;

/** Kinds Gatehouse understands, by `kind` (the API group is checked separately). */
export const NETWORKING_KINDS = ['Gateway', 'VirtualService', 'DestinationRule', 'ServiceEntry', 'WorkloadEntry', 'Sidecar'] as const;
export const SECURITY_KINDS = ['PeerAuthentication', 'RequestAuthentication', 'AuthorizationPolicy'] as const;
export const NETWORKING_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'] as const;
export const SECURITY_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;
export const TELEMETRY_VERSIONS = ['telemetry.istio.io/v1', 'telemetry.istio.io/v1alpha1'] as const;

/** Whether Gatehouse reads documents of this apiVersion and kind (any other is ignored with one warning). */
export function readsKind(apiVersion: string, kind: string): boolean {
  if ((NETWORKING_VERSIONS as readonly string[]).includes(apiVersion)) return (NETWORKING_KINDS as readonly string[]).includes(kind);
  if ((SECURITY_VERSIONS as readonly string[]).includes(apiVersion)) return (SECURITY_KINDS as readonly string[]).includes(kind);
  if ((TELEMETRY_VERSIONS as readonly string[]).includes(apiVersion)) return kind === 'Telemetry';
  return apiVersion === 'v1' && (kind === 'Secret' || kind === 'ConfigMap');
}

/** Everything read from the config sources, validated. Immutable once built. */
export interface ConfigSet {
  resources: readonly Resource[];
  mesh: MeshConfig;
  /** Content hash of the resources (sorted), used to skip no-op reloads. */
  hash: string;
}
