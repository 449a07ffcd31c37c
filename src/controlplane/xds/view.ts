// What the ADS server serves. The server knows nothing of Istio: a ViewSource turns the current
// configuration into per-client "views" (type URL → resource name → encoded resource bytes) and
// the server only subscribes, diffs, sends and tracks ACKs over those opaque bytes.

/** Who is on the other end of an ADS stream, derived from the first request's Node. */
export type ClientKind = 'proxyless' | 'gatehouse' | 'envoy';

export interface ClientInfo {
  /** Node.id */
  id: string;
  /** metadata GENERATOR 'grpc' (or user_agent_name 'gRPC…') → proxyless; GENERATOR 'gatehouse' → gatehouse; else envoy. */
  kind: ClientKind;
  /** Node.metadata (google.protobuf.Struct) as plain JS values. */
  metadata: Record<string, unknown>;
  /** Node.user_agent_name */
  userAgent: string;
}

export interface XdsView {
  /** Sent as version_info (SotW) / system_version_info (delta). */
  version: string;
  /** typeUrl → resource name → encoded resource (the `value` of a google.protobuf.Any). */
  resources: ReadonlyMap<string, ReadonlyMap<string, Uint8Array>>;
}

export interface ViewSource {
  /** Called at connect and on every (debounced) push, once per connected stream. Returning the
   * same XdsView object as last time for a client means "nothing changed" and is cheap. */
  view(client: ClientInfo): XdsView;
  /** Optional: the control plane's current version, shown by syncz(). */
  version?(): string;
}
