// The Envoy v3 protos the xDS server and client speak, loaded once (lazily) from the copy that
// `@grpc/grpc-js-xds` ships in its `deps/` folder: a protobufjs Root for the resource codec
// (codec.ts) and the grpc-js package definition of the Aggregated Discovery Service.
// proto-loader (and protobufjs under it) is required on first use, not at import: a gateway whose
// xDS port no client ever connects to never parses the Envoy protos (about 10 MB of heap).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type * as ProtoLoader from '@grpc/proto-loader';
import type { loadProtosWithOptionsSync } from '@grpc/proto-loader/build/src/util.js';

const require = createRequire(import.meta.url);

/** protobufjs reflection types, named through proto-loader (protobufjs is its dependency, not ours). */
export type ProtoRoot = ReturnType<typeof loadProtosWithOptionsSync>;
export type ProtoType = ReturnType<ProtoRoot['lookupType']>;
export type ProtoEnum = ReturnType<ProtoRoot['lookupEnum']>;
export type ProtoField = ProtoType['fieldsArray'][number];

export const LISTENER_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const ROUTE_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const ENDPOINT_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
export const SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

export const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const TCP_PROXY_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
export const TLS_INSPECTOR_TYPE = 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector';
export const DOWNSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
export const UPSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
export const ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
export const HTTP_FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
export const CORS_POLICY_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy';
export const CORS_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors';

/** Envoy's short names of the resource types (LDS, RDS, ...), for logs and proxy status. */
const SHORT_TYPE_NAMES: ReadonlyMap<string, string> = new Map([
  [LISTENER_TYPE, 'LDS'],
  [ROUTE_TYPE, 'RDS'],
  [CLUSTER_TYPE, 'CDS'],
  [ENDPOINT_TYPE, 'EDS'],
  [SECRET_TYPE, 'SDS'],
]);

/** `LDS` for the Listener type URL, ...; other type URLs as they are. */
export function shortTypeName(typeUrl: string): string {
  return SHORT_TYPE_NAMES.get(typeUrl) ?? typeUrl;
}

/** Whether a type URL is one of the five resource types ADS serves. */
export function isResourceType(typeUrl: string): boolean {
  return SHORT_TYPE_NAMES.has(typeUrl);
}

/** The resource types an ADS stream carries, in the order Envoy asks for them. */
export const RESOURCE_TYPES = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE] as const;

/** Proto files (relative to the include dirs) whose messages the codec must know. */
const PROTO_FILES = [
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/service/discovery/v3/discovery.proto',
  'envoy/service/discovery/v3/ads.proto',
];
// google/protobuf/{any,duration,struct,wrappers}.proto come with protobufjs (its "common" protos).

let includeDirsCache: string[] | undefined;

/** `envoy-api`, `xds`, `googleapis`, `protoc-gen-validate` under `@grpc/grpc-js-xds/deps`. */
export function protoIncludeDirs(): string[] {
  if (!includeDirsCache) {
    const pkg = require.resolve('@grpc/grpc-js-xds/package.json');
    const deps = join(dirname(pkg), 'deps');
    includeDirsCache = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d));
  }
  return includeDirsCache;
}

let rootCache: ProtoRoot | undefined;

/** The protobufjs Root with every Envoy message the codec handles (field names as in the .proto). */
export function protoRoot(): ProtoRoot {
  // keepCase: field names stay snake_case, as the snapshot spells them.
  if (!rootCache) {
    // proto-loader's index registers protobufjs's common protos (descriptor.proto among them) first.
    require('@grpc/proto-loader');
    const util = require('@grpc/proto-loader/build/src/util.js') as { loadProtosWithOptionsSync: typeof loadProtosWithOptionsSync };
    rootCache = util.loadProtosWithOptionsSync(PROTO_FILES, { keepCase: true, includeDirs: protoIncludeDirs() });
  }
  return rootCache;
}

let adsCache: grpc.GrpcObject | undefined;

/** The grpc-js package definition loaded from `envoy/service/discovery/v3/ads.proto`. */
export function adsPackage(): grpc.GrpcObject {
  if (!adsCache) {
    const { loadSync } = require('@grpc/proto-loader') as typeof ProtoLoader;
    const def = loadSync('envoy/service/discovery/v3/ads.proto', {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: protoIncludeDirs(),
    });
    adsCache = (require('@grpc/grpc-js') as typeof grpc).loadPackageDefinition(def);
  }
  return adsCache;
}

/** The ADS service client constructor (`envoy.service.discovery.v3.AggregatedDiscoveryService`). */
export function adsServiceClient(): grpc.ServiceClientConstructor {
  const ns = (adsPackage() as Record<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>>).envoy?.service?.discovery?.v3;
  const svc = ns?.AggregatedDiscoveryService as grpc.ServiceClientConstructor | undefined;
  if (!svc) throw new Error('ads.proto did not define envoy.service.discovery.v3.AggregatedDiscoveryService');
  return svc;
}

const ADS_SERVICE = '/envoy.service.discovery.v3.AggregatedDiscoveryService/';

/**
 * The AggregatedDiscoveryService definition for a grpc-js server, without loading a proto: its two
 * bidirectional-stream methods carry (de)serializers that load ads.proto on their first message
 * (the first xDS client's first request), then hand every message to proto-loader's own.
 */
export function lazyAdsDefinition(): grpc.ServiceDefinition {
  const method = (name: 'StreamAggregatedResources' | 'DeltaAggregatedResources'): grpc.MethodDefinition<unknown, unknown> => {
    let real: grpc.MethodDefinition<unknown, unknown> | undefined;
    const def = (): grpc.MethodDefinition<unknown, unknown> => (real ??= adsServiceClient().service[name] as grpc.MethodDefinition<unknown, unknown>);
    return {
      path: ADS_SERVICE + name,
      requestStream: true,
      responseStream: true,
      originalName: name.charAt(0).toLowerCase() + name.slice(1),
      requestSerialize: (v) => def().requestSerialize(v),
      requestDeserialize: (b) => def().requestDeserialize(b),
      responseSerialize: (v) => def().responseSerialize(v),
      responseDeserialize: (b) => def().responseDeserialize(b),
    };
  };
  return { StreamAggregatedResources: method('StreamAggregatedResources'), DeltaAggregatedResources: method('DeltaAggregatedResources') };
}

const byUrl = new Map<string, ProtoType>();

/** The message type a type URL (`type.googleapis.com/<full.name>`) names, or undefined. */
export function lookupTypeUrl(typeUrl: string): ProtoType | undefined {
  const hit = byUrl.get(typeUrl);
  if (hit) return hit;
  const name = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  if (name === '') return undefined;
  let t: ProtoType;
  try {
    t = protoRoot().lookupType('.' + name);
  } catch {
    return undefined;
  }
  // protobufjs also finds a bare `Listener` by searching nested namespaces: insist on the full name.
  if (t.fullName !== '.' + name) return undefined;
  byUrl.set(typeUrl, t);
  return t;
}
