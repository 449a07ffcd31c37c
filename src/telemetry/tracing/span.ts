// A finished span as the gateway records it: plain fields, converted to OpenTelemetry's
// ReadableSpan only when a batch is exported (off the request path).

/** OpenTelemetry's SpanKind numbers (api.SpanKind): SERVER = 1, CLIENT = 2. */
export const SPAN_KIND_SERVER = 1;
export const SPAN_KIND_CLIENT = 2;

export interface SpanRecord {
  /** 32 hex digits. */
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root span. */
  readonly parentId: string;
  readonly name: string;
  readonly kind: number;
  /** Epoch milliseconds (fractional) of the start. */
  readonly startMs: number;
  readonly durationMs: number;
  /** Envoy's tags (string values). */
  readonly tags: Record<string, string>;
  /** Envoy's `error` tag: a 5xx, a reset, no response. */
  readonly error: boolean;
}
