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
  /** Tags every span of the gateway carries, as [name, value, ...] (shared by all spans of a tracer). */
  readonly staticTags: readonly string[];
  /** This span's own tags, [name, value, ...]; a name repeated wins over an earlier one. */
  readonly tags: readonly string[];
  /** Envoy's `error` tag: a 5xx, a reset, no response. */
  readonly error: boolean;
}

/** A span's tags as one object (the export's attributes): flat arrays on the request path, since V8 spreads objects of dotted keys slowly. */
export function spanAttributes(s: SpanRecord): Record<string, string> {
  const out: Record<string, string> = {};
  const a = s.staticTags;
  for (let i = 0; i < a.length; i += 2) out[a[i]!] = a[i + 1]!;
  const b = s.tags;
  for (let i = 0; i < b.length; i += 2) out[b[i]!] = b[i + 1]!;
  return out;
}
