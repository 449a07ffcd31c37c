// Trace context on the wire, as Envoy's tracers read and write it: W3C Trace Context
// (`traceparent`, `tracestate`), B3 multi-header (`x-b3-traceid`, `x-b3-spanid`,
// `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`) and B3 single (`b3`). `x-ot-span-context`
// (the OpenTracing tracers' binary context) is not read by Envoy's Zipkin and OpenTelemetry tracers:
// it is forwarded untouched, as Envoy forwards it.
import { isHexId, ZERO16 } from './ids.js';

/** Which formats a request carried (bit set); the upstream request gets the same ones. */
export const W3C = 1;
export const B3_MULTI = 2;
export const B3_SINGLE = 4;

/** The context a request arrived with (what the gateway's span continues). */
export interface IncomingContext {
  /** 32 hex digits (a 64-bit B3 id is kept as its 16 digits: `traceId64`). */
  traceId: string;
  /** The caller's span: the parent of the gateway's span ('' when only a decision came). */
  parentId: string;
  /** The caller's sampling decision, undefined when it made none. */
  sampled: boolean | undefined;
  /** B3 debug (`x-b3-flags: 1`, `b3: ...-d`): sampled, and said so upstream. */
  debug: boolean;
  /** W3C `tracestate`, forwarded as it came ('' when none). */
  tracestate: string;
  /** Formats the client used (W3C, B3_MULTI, B3_SINGLE bits). */
  formats: number;
  /** The trace id was 64-bit B3: written back as 16 digits in B3 headers. */
  traceId64: boolean;
}

/** Only a sampling decision, no ids (`x-b3-sampled: 0`, `b3: 0`). */
export interface DecisionOnly {
  sampled: boolean;
  debug: boolean;
  formats: number;
}

/** True for a header name that starts with `t`, `b` or `x-b`: the only ones parse() looks at. */
function candidate(k: string): boolean {
  const c = k.charCodeAt(0);
  return c === 116 /* t */ || c === 98 /* b */ || (c === 120 /* x */ && k.charCodeAt(2) === 98 /* b */);
}

/**
 * Reads the incoming trace context of a header list (lower-case names, [name, value, ...]).
 * W3C wins when valid, then B3 single, then B3 multi (Envoy's Zipkin tracer reads `b3` before
 * `x-b3-*`). Returns a context, a decision without ids, or null.
 */
export function extract(headers: readonly string[]): IncomingContext | DecisionOnly | null {
  let traceparent: string | undefined;
  let tracestate = '';
  let b3: string | undefined;
  let xTrace: string | undefined;
  let xSpan: string | undefined;
  let xSampled: string | undefined;
  let xFlags: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const k = headers[i]!;
    if (!candidate(k)) continue;
    switch (k) {
      case 'traceparent':
        traceparent = headers[i + 1];
        break;
      case 'tracestate':
        tracestate = tracestate ? `${tracestate},${headers[i + 1]}` : headers[i + 1]!;
        break;
      case 'b3':
        b3 = headers[i + 1];
        break;
      case 'x-b3-traceid':
        xTrace = headers[i + 1];
        break;
      case 'x-b3-spanid':
        xSpan = headers[i + 1];
        break;
      case 'x-b3-sampled':
        xSampled = headers[i + 1];
        break;
      case 'x-b3-flags':
        xFlags = headers[i + 1];
        break;
    }
  }
  let formats = 0;
  let w3c: IncomingContext | null = null;
  if (traceparent !== undefined) {
    w3c = parseTraceparent(traceparent.trim(), tracestate);
    if (w3c) formats |= W3C;
  }
  let single: IncomingContext | DecisionOnly | null = null;
  if (b3 !== undefined) {
    single = parseB3Single(b3.trim().toLowerCase());
    if (single) formats |= B3_SINGLE;
  }
  let multi: IncomingContext | DecisionOnly | null = null;
  if (xTrace !== undefined || xSampled !== undefined || xFlags !== undefined) {
    multi = parseB3Multi(xTrace, xSpan, xSampled, xFlags);
    if (multi) formats |= B3_MULTI;
  }
  const chosen = w3c ?? (single && 'traceId' in single ? single : null) ?? (multi && 'traceId' in multi ? multi : null) ?? single ?? multi;
  if (chosen === null) return null;
  chosen.formats = formats;
  return chosen;
}

/** `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; later versions may append fields. */
export function parseTraceparent(v: string, tracestate: string): IncomingContext | null {
  if (v.length < 55) return null;
  const version = v.slice(0, 2);
  if (!/^[0-9a-f]{2}$/.test(version) || version === 'ff') return null;
  if (version === '00' ? v.length !== 55 : v.length > 55 && v.charCodeAt(55) !== 45 /* - */) return null;
  if (v.charCodeAt(2) !== 45 || v.charCodeAt(35) !== 45 || v.charCodeAt(52) !== 45) return null;
  const traceId = v.slice(3, 35);
  const parentId = v.slice(36, 52);
  const flags = v.slice(53, 55);
  if (!isHexId(traceId, 32) || !isHexId(parentId, 16) || !/^[0-9a-f]{2}$/.test(flags)) return null;
  return { traceId, parentId, sampled: (parseInt(flags, 16) & 1) === 1, debug: false, tracestate, formats: W3C, traceId64: false };
}

/** B3 single: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or only `{sampling}`. */
export function parseB3Single(v: string): IncomingContext | DecisionOnly | null {
  if (v === '0' || v === '1' || v === 'd') return { sampled: v !== '0', debug: v === 'd', formats: B3_SINGLE };
  const parts = v.split('-');
  if (parts.length < 2 || parts.length > 4) return null;
  const [t, s, sampling, parent] = parts as [string, string, string | undefined, string | undefined];
  if (!(isHexId(t, 32) || isHexId(t, 16)) || !isHexId(s, 16)) return null;
  if (sampling !== undefined && sampling !== '0' && sampling !== '1' && sampling !== 'd') return null;
  if (parent !== undefined && !isHexId(parent, 16)) return null;
  return {
    traceId: t.length === 16 ? ZERO16 + t : t,
    parentId: s,
    sampled: sampling === undefined ? undefined : sampling !== '0',
    debug: sampling === 'd',
    tracestate: '',
    formats: B3_SINGLE,
    traceId64: t.length === 16,
  };
}

/** B3 multi-header: ids in `x-b3-traceid`/`x-b3-spanid`, decision in `x-b3-sampled` (or `x-b3-flags: 1`). */
export function parseB3Multi(trace: string | undefined, span: string | undefined, sampledRaw: string | undefined, flags: string | undefined): IncomingContext | DecisionOnly | null {
  const debug = flags?.trim() === '1';
  let sampled: boolean | undefined;
  if (sampledRaw !== undefined) {
    const s = sampledRaw.trim().toLowerCase();
    if (s === '1' || s === 'true') sampled = true;
    else if (s === '0' || s === 'false') sampled = false;
  }
  if (debug) sampled = true;
  if (trace !== undefined && span !== undefined) {
    const t = trace.trim().toLowerCase();
    const s = span.trim().toLowerCase();
    if ((isHexId(t, 32) || isHexId(t, 16)) && isHexId(s, 16)) {
      return { traceId: t.length === 16 ? ZERO16 + t : t, parentId: s, sampled, debug, tracestate: '', formats: B3_MULTI, traceId64: t.length === 16 };
    }
  }
  return sampled === undefined ? null : { sampled, debug, formats: B3_MULTI };
}

/** What the upstream request says of the trace: its parent is `spanId` (the gateway's upstream span). */
export interface OutgoingContext {
  traceId: string;
  spanId: string;
  /** The span above `spanId` (the gateway's own span), for B3's parent id. */
  parentId: string;
  sampled: boolean;
  debug: boolean;
  formats: number;
  traceId64: boolean;
}

/**
 * Writes the context into an upstream header list in the formats it names: an existing header of
 * the same name is overwritten in place (a retry rewrites what the previous attempt wrote), a
 * missing one appended. Other formats' headers present in the list are left as they are.
 */
export function inject(headers: string[], c: OutgoingContext): void {
  const f = c.formats;
  if (f & W3C) set(headers, 'traceparent', `00-${c.traceId}-${c.spanId}-${c.sampled ? '01' : '00'}`);
  if (f & (B3_MULTI | B3_SINGLE)) {
    const t = c.traceId64 ? c.traceId.slice(16) : c.traceId;
    if (f & B3_SINGLE) set(headers, 'b3', `${t}-${c.spanId}-${c.debug ? 'd' : c.sampled ? '1' : '0'}-${c.parentId}`);
    if (f & B3_MULTI) {
      set(headers, 'x-b3-traceid', t);
      set(headers, 'x-b3-spanid', c.spanId);
      set(headers, 'x-b3-parentspanid', c.parentId);
      set(headers, 'x-b3-sampled', c.sampled ? '1' : '0');
    }
  }
}

function set(headers: string[], name: string, value: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === name) {
      headers[i + 1] = value;
      return;
    }
  }
  headers.push(name, value);
}
