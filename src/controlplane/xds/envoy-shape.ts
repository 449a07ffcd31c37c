// Snapshot objects <-> Envoy-legal proto objects, for the xDS codec (codec.ts). The Snapshot is
// Envoy-shaped but for a few Gatehouse-only facts and for what proto3 cannot say on the wire;
// `snapshotResourceToProto` moves the former into Envoy-legal places, `protoToSnapshotResource`
// restores the exact snapshot object from a decoded one.
//
// Gatehouse extensions and where they travel:
// - Route: `typed_per_filter_config` values carry no '@type' in the snapshot; on the wire they are
//   Anys ('envoy.filters.http.fault' -> HTTPFault, 'envoy.filters.http.cors' -> CorsPolicy).
// - Route: `redirect.port_from_request` (Istio derivePort FROM_REQUEST_PORT), and a redirect
//   `port_redirect: 0` / `host_redirect: ''` or a route `prefix_rewrite: ''` (explicit proto3
//   defaults, which Gatehouse gives a meaning but the wire drops) travel in the Route's
//   `metadata.filter_metadata.gatehouse` as {redirect: {...}, route: {...}}.
// - Cluster: the UpstreamTlsContext has no '@type' in the snapshot (it gets one on the wire), and
//   `insecure_skip_verify` travels in the Cluster's `metadata.filter_metadata.gatehouse`
//   ({insecure_skip_verify}); when true, the validation context also gets Envoy's own equivalent,
//   `trust_chain_verification: ACCEPT_UNTRUSTED`, so an Envoy honours it too.
// - Secret: `acme` travels as a generic_secret whose inline_string is the JSON
//   {"gatehouse_acme": {...}} (an ACME secret has no other payload; the `type` oneof allows one).
//
// Decode also puts back the fields a proto3 wire cannot distinguish from absent (false, 0, '',
// [] and zero-valued enums in fields without presence) where the Snapshot types declare them
// non-optional: the FILL tables below, by resource type. Keep them in step with snapshot.ts.
import {
  CLUSTER_TYPE,
  CORS_POLICY_TYPE,
  DOWNSTREAM_TLS_TYPE,
  ENDPOINT_TYPE,
  HCM_TYPE,
  HTTP_FAULT_TYPE,
  LISTENER_TYPE,
  ROUTE_TYPE,
  SECRET_TYPE,
  TCP_PROXY_TYPE,
  UPSTREAM_TLS_TYPE,
} from './protos.js';

type Obj = Record<string, unknown>;

/** `typed_per_filter_config` keys of the snapshot and the message each one holds. */
export const PER_FILTER_TYPES: Readonly<Record<string, string>> = {
  'envoy.filters.http.fault': HTTP_FAULT_TYPE,
  'envoy.filters.http.cors': CORS_POLICY_TYPE,
};

const GATEHOUSE = 'gatehouse';
const ACME_KEY = 'gatehouse_acme';

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const list = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);

// ---- Snapshot -> proto ----------------------------------------------------------------------------

/**
 * An Envoy-legal object (input for `encodeResource`) from a snapshot resource of `typeUrl`. The
 * snapshot object (frozen) is never mutated: changed parts are copied, the rest is shared (a
 * resource with nothing to move is returned as it is).
 */
export function snapshotResourceToProto(typeUrl: string, obj: object): Obj {
  const o = obj as Obj;
  switch (typeUrl) {
    case ROUTE_TYPE: {
      let changed = false;
      const vhs = list(o.virtual_hosts).map((vh) => {
        let mine = false;
        const routes = list(vh.routes).map((r) => {
          const x = routeToProto(r);
          if (x !== r) mine = true;
          return x;
        });
        if (!mine) return vh;
        changed = true;
        return { ...vh, routes };
      });
      return changed ? { ...o, virtual_hosts: vhs } : o;
    }
    case CLUSTER_TYPE:
      return clusterToProto(o);
    case SECRET_TYPE: {
      if (o.acme === undefined) return o;
      const { acme, ...rest } = o;
      return { ...rest, generic_secret: { secret: { inline_string: JSON.stringify({ [ACME_KEY]: acme }) } } };
    }
    default:
      return o;
  }
}

function routeToProto(r: Obj): Obj {
  let out = r;
  const tpfc = r.typed_per_filter_config;
  if (isObj(tpfc) && Object.values(tpfc).some((cfg) => isObj(cfg) && cfg['@type'] === undefined)) {
    const typed: Obj = {};
    for (const [key, cfg] of Object.entries(tpfc)) {
      if (!isObj(cfg) || cfg['@type'] !== undefined) {
        typed[key] = cfg;
        continue;
      }
      const t = PER_FILTER_TYPES[key];
      if (!t) throw new Error(`Route ${String(r.name)}: typed_per_filter_config[${JSON.stringify(key)}] has no '@type' and is not a filter Gatehouse knows`);
      typed[key] = { '@type': t, ...cfg };
    }
    out = { ...out, typed_per_filter_config: typed };
  }
  const ext: Obj = {};
  const redirect = r.redirect;
  if (isObj(redirect)) {
    const re: Obj = {};
    if (redirect.port_from_request !== undefined) {
      const { port_from_request, ...rest } = redirect;
      re.port_from_request = port_from_request;
      out = { ...out, redirect: rest };
    }
    if (redirect.port_redirect === 0) re.port_redirect = 0;
    if (redirect.host_redirect === '') re.host_redirect = '';
    if (Object.keys(re).length > 0) ext.redirect = re;
  }
  if (isObj(r.route) && r.route.prefix_rewrite === '') ext.route = { prefix_rewrite: '' };
  return Object.keys(ext).length > 0 ? withGatehouseMetadata(out === r ? { ...r } : out, ext) : out;
}

function clusterToProto(c: Obj): Obj {
  const ts = c.transport_socket;
  if (!isObj(ts) || !isObj(ts.typed_config)) return c;
  const { insecure_skip_verify: insecure, ...tls } = ts.typed_config;
  if (tls['@type'] === undefined) tls['@type'] = UPSTREAM_TLS_TYPE;
  const ctc = tls.common_tls_context;
  if (insecure === true && isObj(ctc) && isObj(ctc.validation_context)) {
    tls.common_tls_context = { ...ctc, validation_context: { ...ctc.validation_context, trust_chain_verification: 'ACCEPT_UNTRUSTED' } };
  }
  const out = { ...c, transport_socket: { ...ts, typed_config: tls } };
  return insecure === undefined ? out : withGatehouseMetadata(out, { insecure_skip_verify: insecure });
}

/** `target` (a fresh copy) with `metadata.filter_metadata.gatehouse = ext`, the metadata copied. */
function withGatehouseMetadata(target: Obj, ext: Obj): Obj {
  const md = isObj(target.metadata) ? target.metadata : {};
  const fm = isObj(md.filter_metadata) ? md.filter_metadata : {};
  target.metadata = { ...md, filter_metadata: { ...fm, [GATEHOUSE]: ext } };
  return target;
}

/** Removes and returns `metadata.filter_metadata.gatehouse` (and metadata that held only it). */
function takeGatehouseMetadata(target: Obj): Obj | undefined {
  const md = target.metadata;
  if (!isObj(md) || !isObj(md.filter_metadata)) return undefined;
  const fm = md.filter_metadata;
  const ext = fm[GATEHOUSE];
  if (!isObj(ext)) return undefined;
  delete fm[GATEHOUSE];
  if (Object.keys(fm).length === 0) {
    delete md.filter_metadata;
    if (Object.keys(md).length === 0) delete target.metadata;
  }
  return ext;
}

// ---- Proto -> snapshot ----------------------------------------------------------------------------

/**
 * The snapshot object from a decoded resource of `typeUrl` (the inverse of
 * `snapshotResourceToProto`, plus the FILL defaults). Mutates and returns `obj`.
 */
export function protoToSnapshotResource(typeUrl: string, obj: Record<string, unknown>): Record<string, unknown> {
  switch (typeUrl) {
    case LISTENER_TYPE:
      fill(obj, obj.api_listener !== undefined ? API_LISTENER : LISTENER);
      break;
    case ROUTE_TYPE:
      fill(obj, ROUTE_CONFIGURATION);
      for (const vh of list(obj.virtual_hosts)) for (const r of list(vh.routes)) routeFromProto(r);
      break;
    case CLUSTER_TYPE:
      fill(obj, CLUSTER);
      // DNS and static clusters carry their endpoints inline (Envoy requires it); the snapshot
      // keeps them in `endpoints` (the replica client moves them there).
      if (isObj(obj.load_assignment)) fill(obj.load_assignment, CLUSTER_LOAD_ASSIGNMENT);
      clusterFromProto(obj);
      break;
    case ENDPOINT_TYPE:
      fill(obj, CLUSTER_LOAD_ASSIGNMENT);
      break;
    case SECRET_TYPE: {
      fill(obj, SECRET);
      const gs = obj.generic_secret;
      const text = isObj(gs) && isObj(gs.secret) ? gs.secret.inline_string : undefined;
      if (typeof text === 'string' && text.startsWith(`{"${ACME_KEY}"`)) {
        const parsed = JSON.parse(text) as Obj;
        delete obj.generic_secret;
        obj.acme = parsed[ACME_KEY];
      }
      break;
    }
    default:
      break;
  }
  return obj;
}

function routeFromProto(r: Obj): void {
  const tpfc = r.typed_per_filter_config;
  if (isObj(tpfc)) {
    for (const [key, cfg] of Object.entries(tpfc)) {
      if (!isObj(cfg) || cfg['@type'] !== PER_FILTER_TYPES[key]) continue;
      const { '@type': _t, ...rest } = cfg;
      tpfc[key] = rest;
    }
  }
  const ext = takeGatehouseMetadata(r);
  if (!ext) return;
  const redirect = r.redirect;
  if (isObj(ext.redirect) && isObj(redirect)) Object.assign(redirect, ext.redirect);
  if (isObj(ext.route) && isObj(r.route)) Object.assign(r.route, ext.route);
}

function clusterFromProto(c: Obj): void {
  const ts = c.transport_socket;
  const ctx = isObj(ts) && isObj(ts.typed_config) ? ts.typed_config : undefined;
  if (ctx && ctx['@type'] === UPSTREAM_TLS_TYPE) delete ctx['@type'];
  const ext = takeGatehouseMetadata(c);
  if (!ext || ext.insecure_skip_verify === undefined || !ctx) return;
  ctx.insecure_skip_verify = ext.insecure_skip_verify;
  const vc = isObj(ctx.common_tls_context) ? ctx.common_tls_context.validation_context : undefined;
  if (ext.insecure_skip_verify === true && isObj(vc) && vc.trust_chain_verification === 'ACCEPT_UNTRUSTED') delete vc.trust_chain_verification;
}

// ---- FILL: non-optional snapshot fields a proto3 wire drops when they hold the default -----------

type Rule =
  | { k: 'value'; value: string | number | boolean }
  | { k: 'object'; spec: Spec }
  | { k: 'list'; spec: Spec | undefined; required: boolean }
  | { k: 'any'; specs: Readonly<Record<string, Spec>> };
type Spec = Readonly<Record<string, Rule>>;

/** A scalar/enum that is absent when it holds this (default) value. */
const val = (value: string | number | boolean): Rule => ({ k: 'value', value });
/** A message field: filled inside when present. */
const obj = (spec: Spec): Rule => ({ k: 'object', spec });
/** A repeated field the snapshot always has (absent -> []), its elements filled with `spec`. */
const arr = (spec?: Spec): Rule => ({ k: 'list', spec, required: true });
/** A repeated field the snapshot may omit; its elements filled with `spec`. */
const optArr = (spec: Spec): Rule => ({ k: 'list', spec, required: false });
/** An Any (still carrying '@type' when filled), by type URL. */
const anyOf = (specs: Record<string, Spec>): Rule => ({ k: 'any', specs });

function fill(o: Obj, spec: Spec): void {
  for (const key in spec) {
    const rule = spec[key]!;
    const cur = o[key];
    switch (rule.k) {
      case 'value':
        if (cur === undefined) o[key] = rule.value;
        break;
      case 'object':
        if (isObj(cur)) fill(cur, rule.spec);
        break;
      case 'list':
        if (Array.isArray(cur)) {
          if (rule.spec) for (const e of cur) if (isObj(e)) fill(e, rule.spec);
        } else if (cur === undefined && rule.required) o[key] = [];
        break;
      case 'any': {
        const s = isObj(cur) && typeof cur['@type'] === 'string' ? rule.specs[cur['@type']] : undefined;
        if (s) fill(cur as Obj, s);
        break;
      }
    }
  }
}

const CONFIG_SOURCE: Spec = { resource_api_version: val('AUTO') };
const SDS_CONFIG: Spec = { name: val(''), sds_config: obj(CONFIG_SOURCE) };
const STRING_MATCHER: Spec = { safe_regex: obj({ regex: val('') }) };
const FRACTION: Spec = { numerator: val(0), denominator: val('HUNDRED') };
const HEADER_VALUE_OPTION: Spec = { header: obj({ key: val(''), value: val('') }), append_action: val('APPEND_IF_EXISTS_OR_ADD') };
const HEADER_OPS: Spec = { request_headers_to_add: optArr(HEADER_VALUE_OPTION), response_headers_to_add: optArr(HEADER_VALUE_OPTION) };

const HCM: Spec = {
  stat_prefix: val(''),
  rds: obj({ route_config_name: val(''), config_source: obj(CONFIG_SOURCE) }),
  http_filters: arr({ name: val('') }),
  xff_num_trusted_hops: val(0),
  server_name: val(''),
  http_protocol_options: obj({ accept_http_10: val(false) }),
};

const DOWNSTREAM_TLS: Spec = {
  common_tls_context: obj({
    alpn_protocols: arr(),
    tls_certificate_sds_secret_configs: arr(SDS_CONFIG),
    combined_validation_context: obj({ validation_context_sds_secret_config: obj(SDS_CONFIG) }),
  }),
};

/** tcp_proxy (TCP servers, TLS passthrough chains); `cluster` is a oneof member, so it keeps presence. */
const TCP_PROXY: Spec = {
  stat_prefix: val(''),
  weighted_clusters: obj({ clusters: arr({ name: val(''), weight: val(0) }) }),
};

const LISTENER: Spec = {
  name: val(''),
  address: obj({ socket_address: obj({ address: val(''), protocol: val('TCP') }) }),
  listener_filters: optArr({ name: val('') }),
  filter_chains: arr({
    filters: arr({ name: val(''), typed_config: anyOf({ [HCM_TYPE]: HCM, [TCP_PROXY_TYPE]: TCP_PROXY }) }),
    transport_socket: obj({ name: val(''), typed_config: anyOf({ [DOWNSTREAM_TLS_TYPE]: DOWNSTREAM_TLS }) }),
  }),
  traffic_direction: val('UNSPECIFIED'),
};

/** A proxyless client's listener (snapshot ApiListener): no protocol, no filter chains. */
const API_LISTENER: Spec = {
  name: val(''),
  address: obj({ socket_address: obj({ address: val('') }) }),
  api_listener: obj({ api_listener: anyOf({ [HCM_TYPE]: HCM }) }),
};

const HASH_POLICY: Spec = {
  header: obj({ header_name: val('') }),
  cookie: obj({ name: val('') }),
  connection_properties: obj({ source_ip: val(false) }),
  query_parameter: obj({ name: val('') }),
};

const ROUTE_ACTION: Spec = {
  weighted_clusters: obj({ clusters: arr({ name: val(''), ...HEADER_OPS }) }),
  cluster_not_found_response_code: val('SERVICE_UNAVAILABLE'),
  retry_policy: obj({ retry_on: val(''), retry_host_predicate: optArr({ name: val('') }) }),
  request_mirror_policies: optArr({ cluster: val(''), runtime_fraction: obj({ default_value: obj(FRACTION) }) }),
  regex_rewrite: obj({ pattern: obj({ regex: val('') }), substitution: val('') }),
  hash_policy: optArr(HASH_POLICY),
};

const FAULT: Spec = { delay: obj({ percentage: obj(FRACTION) }), abort: obj({ percentage: obj(FRACTION) }) };
const CORS: Spec = { allow_origin_string_match: arr(STRING_MATCHER) };

/** ValueMatcher (recursive: list_match.one_of and or_match hold ValueMatchers). */
const VALUE_MATCHER: Record<string, Rule> = { string_match: obj(STRING_MATCHER) };
VALUE_MATCHER.list_match = obj({ one_of: obj(VALUE_MATCHER) });
VALUE_MATCHER.or_match = obj({ value_matchers: arr(VALUE_MATCHER) });

const ROUTE: Spec = {
  name: val(''),
  match: obj({
    safe_regex: obj({ regex: val('') }),
    headers: arr({ name: val(''), string_match: obj(STRING_MATCHER) }),
    query_parameters: arr({ name: val(''), string_match: obj(STRING_MATCHER) }),
    dynamic_metadata: optArr({ value: obj(VALUE_MATCHER) }),
  }),
  route: obj(ROUTE_ACTION),
  redirect: obj({ response_code: val('MOVED_PERMANENTLY') }),
  direct_response: obj({ status: val(0) }),
  ...HEADER_OPS,
  decorator: obj({ operation: val('') }),
  typed_per_filter_config: anyOfMap({ 'envoy.filters.http.fault': FAULT, 'envoy.filters.http.cors': CORS }),
};

/** `typed_per_filter_config`: each value by its key's filter (values still carry '@type'). */
function anyOfMap(byKey: Record<string, Spec>): Rule {
  const spec: Record<string, Rule> = {};
  for (const [k, s] of Object.entries(byKey)) spec[k] = anyOf({ [PER_FILTER_TYPES[k]!]: s });
  return obj(spec);
}

const ROUTE_CONFIGURATION: Spec = {
  name: val(''),
  virtual_hosts: arr({ name: val(''), domains: arr(), routes: arr(ROUTE), include_request_attempt_count: val(false) }),
};

const CLUSTER: Spec = {
  name: val(''),
  eds_cluster_config: obj({ service_name: val(''), eds_config: obj(CONFIG_SOURCE) }),
  lb_policy: val('ROUND_ROBIN'),
  circuit_breakers: obj({ thresholds: arr() }),
  outlier_detection: obj({ split_external_local_origin_errors: val(false) }),
  transport_socket: obj({ name: val('') }),
};

const CLUSTER_LOAD_ASSIGNMENT: Spec = {
  cluster_name: val(''),
  endpoints: arr({
    locality: obj({ region: val(''), zone: val(''), sub_zone: val('') }),
    lb_endpoints: arr({ endpoint: obj({ address: obj({ socket_address: obj({ address: val('') }) }) }), health_status: val('UNKNOWN') }),
    priority: val(0),
  }),
};

const SECRET: Spec = { name: val('') };
