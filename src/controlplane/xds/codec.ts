// The protobuf codec of the xDS server and client: plain objects in "proto3 JSON with snake_case
// field names" (what the Snapshot holds) <-> Envoy v3 wire bytes, by walking protobufjs reflection
// (protobufjs's own fromObject/toObject do not know the well-known types' JSON forms).
//
// Mapping (both directions):
//   message                      plain object keyed by the .proto field names (snake_case)
//   google.protobuf.*Value       the plain scalar (BoolValue -> boolean, UInt64Value -> number, ...)
//   google.protobuf.Struct/Value/ListValue   plain JSON
//   google.protobuf.Any          {'@type': url, ...fields of the named type} ({'@type', value} when
//                                the named type is itself a well-known type with a JSON form)
//   google.protobuf.Duration     {seconds: number, nanos: number} (decode always gives both)
//   enum                         its value name (numbers are accepted on encode)
//   int64 / uint64               number (accepted as a decimal string on encode)
//   bytes                        base64 string (a Uint8Array is accepted on encode)
//   oneof                        whichever member is set (two members set: an Error)
//
// Presence rule, which makes decode(encode(x)) exact for the fields that carry presence: encode
// writes canonical proto3 (a scalar/enum field without presence is not written when it holds its
// default, an empty repeated/map field is not written), and decode omits exactly those fields
// again: a field absent on the wire, or holding its default while it has no presence, is absent
// from the object; empty repeated and map fields are absent. Message fields, oneof members,
// `optional` scalars and wrapper types do carry presence, so they come back even when empty/zero.
// What the wire cannot say (an explicit `false`, `0`, `''`, `[]` in a field without presence) is
// put back by the snapshot adapter (envoy-shape.ts), which knows which of those the Snapshot types
// declare non-optional.
//
// Unknown fields in an object throw an Error naming the field path, e.g.
// `Cluster.circuit_breakers.thresholds[0].max_requestz: no such field`.
import { protoToSnapshotResource, snapshotResourceToProto } from './envoy-shape.js';
import { lookupTypeUrl, type ProtoEnum, type ProtoField, type ProtoType } from './protos.js';

export { protoToSnapshotResource, snapshotResourceToProto } from './envoy-shape.js';

export class ProtoCodecError extends Error {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'ProtoCodecError';
  }
}

/** A google.protobuf.Any as grpc-js / proto-loader (keepCase) hand it over. */
export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

type Obj = Record<string, unknown>;

type Wkt = 'any' | 'duration' | 'struct' | 'value' | 'list' | 'wrapper';

const WKT: Record<string, Wkt> = {
  '.google.protobuf.Any': 'any',
  '.google.protobuf.Duration': 'duration',
  '.google.protobuf.Struct': 'struct',
  '.google.protobuf.Value': 'value',
  '.google.protobuf.ListValue': 'list',
  '.google.protobuf.BoolValue': 'wrapper',
  '.google.protobuf.UInt32Value': 'wrapper',
  '.google.protobuf.UInt64Value': 'wrapper',
  '.google.protobuf.Int32Value': 'wrapper',
  '.google.protobuf.Int64Value': 'wrapper',
  '.google.protobuf.DoubleValue': 'wrapper',
  '.google.protobuf.FloatValue': 'wrapper',
  '.google.protobuf.StringValue': 'wrapper',
  '.google.protobuf.BytesValue': 'wrapper',
};

interface FieldInfo {
  name: string;
  repeated: boolean;
  map: boolean;
  /** Singular field whose absence is visible on the wire (message, oneof member, `optional`). */
  presence: boolean;
  oneof: string | undefined;
  kind: 'scalar' | 'enum' | 'message';
  /** protobufjs scalar type name (`string`, `uint32`, `int64`, `bytes`, ...) for scalars. */
  scalar: string;
  enumType: ProtoEnum | undefined;
  msgType: ProtoType | undefined;
  /** TypeInfo of msgType, filled on first use (types refer to each other cyclically). */
  sub: TypeInfo | undefined;
}

interface TypeInfo {
  type: ProtoType;
  fields: Map<string, FieldInfo>;
  wkt: Wkt | undefined;
  /**
   * Names of the well-known types' fields, by field number (protobufjs's bundled definitions of
   * Struct/Value use camelCase names even with keepCase).
   */
  n: string[];
}

const infos = new WeakMap<ProtoType, TypeInfo>();

function info(type: ProtoType): TypeInfo {
  let ti = infos.get(type);
  if (ti) return ti;
  const fields = new Map<string, FieldInfo>();
  for (const f of type.fieldsArray) {
    f.resolve();
    const rt = f.resolvedType as unknown;
    const isEnum = rt !== null && typeof rt === 'object' && 'values' in rt && !('fieldsArray' in rt);
    const isMsg = rt !== null && typeof rt === 'object' && 'fieldsArray' in rt;
    fields.set(f.name, {
      name: f.name,
      repeated: f.repeated && !f.map,
      map: f.map,
      presence: !f.repeated && !f.map && (isMsg || f.partOf != null || hasExplicitPresence(f)),
      // proto3 `optional` sits in a synthetic oneof of its own: not a oneof for the conflict check.
      oneof: f.partOf && f.options?.proto3_optional !== true ? f.partOf.name : undefined,
      kind: isMsg ? 'message' : isEnum ? 'enum' : 'scalar',
      scalar: f.type,
      enumType: isEnum ? (rt as ProtoEnum) : undefined,
      msgType: isMsg ? (rt as ProtoType) : undefined,
      sub: undefined,
    });
  }
  const wkt = WKT[type.fullName];
  const n: string[] = [];
  if (wkt) for (const f of type.fieldsArray) n[f.id] = f.name;
  ti = { type, fields, wkt, n };
  infos.set(type, ti);
  return ti;
}

/** proto2 `optional`/`required` fields (protobufjs: field_presence EXPLICIT). */
function hasExplicitPresence(f: ProtoField): boolean {
  return (f as unknown as { hasPresence?: boolean }).hasPresence === true;
}

// ---- Encode: plain object -> protobufjs message object -----------------------------------------

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);

const LONG_TYPES = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const INT32 = new Set(['int32', 'sint32', 'sfixed32']);
const UINT32 = new Set(['uint32', 'fixed32']);

/**
 * The path of a field (`path.key`, `path.key[i]`, `path.key["k"]`), built only when needed: an
 * error, or a nested message (paths are never built for scalars that encode fine).
 */
type Idx = number | string | undefined;
function at(path: string, key: string | undefined, idx: Idx): string {
  const p = key === undefined ? path : `${path}.${key}`;
  return idx === undefined ? p : typeof idx === 'number' ? `${p}[${idx}]` : `${p}[${JSON.stringify(idx)}]`;
}

function fail(path: string, key: string | undefined, idx: Idx, detail: string): never {
  throw new ProtoCodecError(at(path, key, idx), detail);
}

function encScalar(t: string, v: unknown, path: string, key?: string, idx?: Idx): unknown {
  switch (t) {
    case 'string':
      if (typeof v !== 'string') fail(path, key, idx, `expected a string, got ${describe(v)}`);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') fail(path, key, idx, `expected a boolean, got ${describe(v)}`);
      return v;
    case 'bytes':
      if (v instanceof Uint8Array) return v;
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) fail(path, key, idx, `expected base64 bytes, got ${describe(v)}`);
      return Buffer.from(v, 'base64');
    case 'double':
    case 'float':
      if (typeof v !== 'number') fail(path, key, idx, `expected a number, got ${describe(v)}`);
      return v;
    default:
      break;
  }
  if (LONG_TYPES.has(t)) {
    const unsigned = t === 'uint64' || t === 'fixed64';
    if (typeof v === 'number' && Number.isSafeInteger(v) && (!unsigned || v >= 0)) return v;
    if (typeof v === 'string' && (unsigned ? /^\d+$/ : /^-?\d+$/).test(v)) return v;
    fail(path, key, idx, `expected ${unsigned ? 'a non-negative' : 'an'} integer (${t}), got ${describe(v)}`);
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, key, idx, `expected an integer (${t}), got ${describe(v)}`);
  if (INT32.has(t) && (v < -2147483648 || v > 2147483647)) fail(path, key, idx, `${v} is out of range for ${t}`);
  if (UINT32.has(t) && (v < 0 || v > 4294967295)) fail(path, key, idx, `${v} is out of range for ${t}`);
  return v;
}

function encEnum(e: ProtoEnum, v: unknown, path: string, key: string | undefined, idx: Idx): number {
  if (typeof v === 'string') {
    const n = e.values[v];
    if (n === undefined) throw new ProtoCodecError(at(path, key, idx), `${JSON.stringify(v)} is not a value of enum ${e.fullName.slice(1)}`);
    return n;
  }
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  throw new ProtoCodecError(at(path, key, idx), `expected an enum name of ${e.fullName.slice(1)}, got ${describe(v)}`);
}

const subInfo = (f: FieldInfo): TypeInfo => (f.sub ??= info(f.msgType!));

/** One value of field `f` (`key` of the message at `path`; `idx` for an element of a list or map). */
function encValue(f: FieldInfo, v: unknown, path: string, key: string | undefined, idx: Idx): unknown {
  if (f.kind === 'message') return encMessage(subInfo(f), v, at(path, key, idx));
  if (f.kind === 'enum') return encEnum(f.enumType!, v, path, key, idx);
  return encScalar(f.scalar, v, path, key, idx);
}

function isDefaultEncoded(f: FieldInfo, v: unknown): boolean {
  if (f.kind === 'message') return false;
  if (f.kind === 'enum') return v === 0;
  if (v instanceof Uint8Array) return v.length === 0;
  return v === '' || v === false || v === 0 || v === '0';
}

function encMessage(ti: TypeInfo, v: unknown, path: string): Obj {
  if (ti.wkt) return encWkt(ti, v, path);
  if (!isObj(v)) throw new ProtoCodecError(path, `expected an object (${ti.type.fullName.slice(1)}), got ${describe(v)}`);
  const out: Obj = {};
  let oneofs: Map<string, string> | undefined;
  for (const key of Object.keys(v)) {
    const val = v[key];
    if (val === undefined || val === null) continue;
    const f = ti.fields.get(key);
    if (!f) throw new ProtoCodecError(at(path, key, undefined), 'no such field');
    if (f.map) {
      if (!isObj(val)) throw new ProtoCodecError(at(path, key, undefined), `expected an object (map), got ${describe(val)}`);
      const keys = Object.keys(val);
      if (keys.length === 0) continue;
      const m: Obj = {};
      for (const k of keys) {
        const ev = val[k];
        if (ev === undefined) continue;
        m[k] = encValue(f, ev, path, key, k);
      }
      out[key] = m;
      continue;
    }
    if (f.repeated) {
      if (!Array.isArray(val)) throw new ProtoCodecError(at(path, key, undefined), `expected an array, got ${describe(val)}`);
      if (val.length === 0) continue;
      const arr = new Array<unknown>(val.length);
      for (let i = 0; i < val.length; i++) {
        const x: unknown = val[i];
        if (x === undefined || x === null) throw new ProtoCodecError(at(path, key, i), 'null in a repeated field');
        arr[i] = encValue(f, x, path, key, i);
      }
      out[key] = arr;
      continue;
    }
    if (f.oneof) {
      oneofs ??= new Map();
      const other = oneofs.get(f.oneof);
      if (other !== undefined) throw new ProtoCodecError(path, `oneof ${f.oneof} has both ${other} and ${key}`);
      oneofs.set(f.oneof, key);
    }
    const enc = encValue(f, val, path, key, undefined);
    if (!f.presence && isDefaultEncoded(f, enc)) continue;
    out[key] = enc;
  }
  return out;
}

function encWkt(ti: TypeInfo, v: unknown, path: string): Obj {
  const n = ti.n;
  switch (ti.wkt) {
    case 'wrapper': {
      const f = ti.fields.get(n[1]!)!;
      const enc = encValue(f, v, path, undefined, undefined);
      return isDefaultEncoded(f, enc) ? {} : { [n[1]!]: enc };
    }
    case 'duration': {
      if (!isObj(v)) throw new ProtoCodecError(path, `expected a Duration {seconds, nanos}, got ${describe(v)}`);
      const out: Obj = {};
      for (const key of Object.keys(v)) {
        if (v[key] === undefined || v[key] === null) continue;
        if (key !== 'seconds' && key !== 'nanos') throw new ProtoCodecError(`${path}.${key}`, 'no such field');
      }
      const s = v.seconds ?? 0;
      const ns = v.nanos ?? 0;
      const se = encScalar('int64', s, path, 'seconds');
      const ne = encScalar('int32', ns, path, 'nanos') as number;
      if (Math.abs(ne) > 999_999_999) throw new ProtoCodecError(`${path}.nanos`, `${ne} is out of range`);
      if (se !== 0 && se !== '0') out[n[1]!] = se;
      if (ne !== 0) out[n[2]!] = ne;
      return out;
    }
    case 'struct':
      if (!isObj(v)) throw new ProtoCodecError(path, `expected an object (Struct), got ${describe(v)}`);
      return { [n[1]!]: encStructFields(v, path) };
    case 'list':
      if (!Array.isArray(v)) throw new ProtoCodecError(path, `expected an array (ListValue), got ${describe(v)}`);
      return { [n[1]!]: v.map((x: unknown, i: number) => encJson(x, `${path}[${i}]`)) };
    case 'value':
      return encJson(v, path);
    case 'any':
      return encAnyAt(v, path);
    default:
      throw new ProtoCodecError(path, 'unhandled well-known type');
  }
}

let jsonNames: { value: string[]; struct: string[]; list: string[] } | undefined;

function valueNames(): { value: string[]; struct: string[]; list: string[] } {
  if (!jsonNames) {
    const t = lookupTypeUrl('type.googleapis.com/google.protobuf.Value')!;
    jsonNames = {
      value: info(t).n,
      struct: info(lookupTypeUrl('type.googleapis.com/google.protobuf.Struct')!).n,
      list: info(lookupTypeUrl('type.googleapis.com/google.protobuf.ListValue')!).n,
    };
  }
  return jsonNames;
}

function encStructFields(v: Obj, path: string): Obj {
  const fields: Obj = {};
  for (const k of Object.keys(v)) {
    if (v[k] === undefined) continue;
    fields[k] = encJson(v[k], `${path}.${k}`);
  }
  return fields;
}

/** Any JSON value as a google.protobuf.Value message. */
function encJson(v: unknown, path: string): Obj {
  const n = valueNames();
  if (v === null || v === undefined) return { [n.value[1]!]: 0 };
  switch (typeof v) {
    case 'number':
      if (!Number.isFinite(v)) throw new ProtoCodecError(path, `${v} cannot be stored in a Struct`);
      return { [n.value[2]!]: v };
    case 'string':
      return { [n.value[3]!]: v };
    case 'boolean':
      return { [n.value[4]!]: v };
    case 'object':
      if (Array.isArray(v)) return { [n.value[6]!]: { [n.list[1]!]: v.map((x: unknown, i: number) => encJson(x, `${path}[${i}]`)) } };
      return { [n.value[5]!]: { [n.struct[1]!]: encStructFields(v as Obj, path) } };
    default:
      throw new ProtoCodecError(path, `${typeof v} cannot be stored in a Struct`);
  }
}

function typeForUrl(url: unknown, path: string): ProtoType {
  if (typeof url !== 'string' || url === '') throw new ProtoCodecError(path, `an Any needs '@type', got ${describe(url)}`);
  const t = lookupTypeUrl(url);
  if (!t) throw new ProtoCodecError(path, `unknown @type ${JSON.stringify(url)} (no such message in the loaded protos)`);
  return t;
}

/** {'@type', ...} -> {type_url, value} with the inner message encoded. */
function encAnyAt(v: unknown, path: string): Obj {
  if (!isObj(v)) throw new ProtoCodecError(path, `expected an object with '@type' (Any), got ${describe(v)}`);
  const url = v['@type'];
  const t = typeForUrl(url, path);
  const ti = info(t);
  let body: unknown;
  if (ti.wkt && ti.wkt !== 'any') {
    for (const k of Object.keys(v)) if (k !== '@type' && k !== 'value' && v[k] !== undefined) throw new ProtoCodecError(`${path}.${k}`, 'no such field');
    body = v.value;
  } else {
    const { '@type': _drop, ...rest } = v;
    body = rest;
  }
  const msg = body === undefined ? {} : encMessage(ti, body, path);
  return { type_url: url, value: t.encode(msg).finish() };
}

// ---- Decode: protobufjs message object -> plain object -----------------------------------------

const hasOwn = Object.prototype.hasOwnProperty;

function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return Number(v);
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number; unsigned?: boolean };
    return (l.unsigned ? l.high >>> 0 : l.high) * 4294967296 + (l.low >>> 0);
  }
  return Number(v);
}

function decScalar(t: string, v: unknown): unknown {
  if (t === 'bytes') return Buffer.from(v as Uint8Array).toString('base64');
  if (LONG_TYPES.has(t)) return toNumber(v);
  return v;
}

function decValue(f: FieldInfo, v: unknown, path: string, key: string, idx: Idx): unknown {
  if (f.kind === 'message') return decMessage(subInfo(f), v as Obj, at(path, key, idx));
  if (f.kind === 'enum') return f.enumType!.valuesById[v as number] ?? v;
  return decScalar(f.scalar, v);
}

function isDefaultDecoded(f: FieldInfo, v: unknown): boolean {
  if (f.kind === 'message') return false;
  if (f.kind === 'enum') return v === f.enumType!.valuesById[0] || v === 0;
  return v === '' || v === false || v === 0;
}

function decMessage(ti: TypeInfo, m: Obj, path: string): unknown {
  if (ti.wkt) return decWkt(ti, m, path);
  const out: Obj = {};
  for (const key of Object.keys(m)) {
    const f = ti.fields.get(key);
    if (!f) continue;
    const val = m[key];
    if (val === undefined || val === null) continue;
    if (f.map) {
      const keys = Object.keys(val as Obj);
      if (keys.length === 0) continue;
      const o: Obj = {};
      for (const k of keys) o[k] = decValue(f, (val as Obj)[k], path, key, k);
      out[key] = o;
    } else if (f.repeated) {
      const arr = val as unknown[];
      if (arr.length === 0) continue;
      out[key] = arr.map((x, i) => decValue(f, x, path, key, i));
    } else {
      const dec = decValue(f, val, path, key, undefined);
      if (!f.presence && isDefaultDecoded(f, dec)) continue;
      out[key] = dec;
    }
  }
  return out;
}

function decWkt(ti: TypeInfo, m: Obj, path: string): unknown {
  const n = ti.n;
  switch (ti.wkt) {
    case 'wrapper': {
      const f = ti.fields.get(n[1]!)!;
      return decScalar(f.scalar, m[n[1]!]);
    }
    case 'duration':
      return { seconds: toNumber(m[n[1]!] ?? 0), nanos: toNumber(m[n[2]!] ?? 0) };
    case 'struct':
      return decStructFields(m[n[1]!] as Obj | undefined);
    case 'list':
      return ((m[n[1]!] as Obj[] | undefined) ?? []).map(decJson);
    case 'value':
      return decJson(m);
    case 'any':
      return decAnyAt(m, path);
    default:
      throw new ProtoCodecError(path, 'unhandled well-known type');
  }
}

function decStructFields(fields: Obj | undefined): Obj {
  const out: Obj = {};
  if (fields) for (const k of Object.keys(fields)) out[k] = decJson(fields[k] as Obj);
  return out;
}

function decJson(m: Obj): unknown {
  const n = valueNames();
  const v = n.value;
  if (hasOwn.call(m, v[2]!)) return m[v[2]!];
  if (hasOwn.call(m, v[3]!)) return m[v[3]!];
  if (hasOwn.call(m, v[4]!)) return m[v[4]!];
  if (hasOwn.call(m, v[5]!)) return decStructFields((m[v[5]!] as Obj)[n.struct[1]!] as Obj | undefined);
  if (hasOwn.call(m, v[6]!)) return (((m[v[6]!] as Obj)[n.list[1]!] as Obj[] | undefined) ?? []).map(decJson);
  return null;
}

function decAnyAt(m: Obj, path: string): Obj {
  const url = m.type_url as string | undefined;
  const t = typeForUrl(url, path);
  const ti = info(t);
  const inner = decMessage(ti, t.decode((m.value as Uint8Array | undefined) ?? new Uint8Array(0)) as unknown as Obj, path);
  if (ti.wkt && ti.wkt !== 'any') return { '@type': url, value: inner };
  return { '@type': url, ...(inner as Obj) };
}

// ---- API -----------------------------------------------------------------------------------------

function resourceType(typeUrl: string): ProtoType {
  const t = lookupTypeUrl(typeUrl);
  if (!t) throw new Error(`unknown type URL ${JSON.stringify(typeUrl)} (no such message in the loaded protos)`);
  return t;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * The wire bytes of `obj` as the message `typeUrl` names. A top-level '@type', if any, must be
 * `typeUrl` itself.
 */
export function encodeResource(typeUrl: string, obj: object): Buffer {
  const t = resourceType(typeUrl);
  const ti = info(t);
  let body: unknown = obj;
  if (!ti.wkt && isObj(obj) && '@type' in obj) {
    if (obj['@type'] !== typeUrl) throw new ProtoCodecError(t.name, `'@type' ${JSON.stringify(obj['@type'])} is not ${typeUrl}`);
    const { '@type': _drop, ...rest } = obj;
    body = rest;
  }
  return toBuffer(t.encode(encMessage(ti, body, t.name)).finish());
}

/** The plain object of the message `typeUrl` names (see the presence rule above). */
export function decodeResource(typeUrl: string, bytes: Uint8Array): Record<string, unknown> {
  const t = resourceType(typeUrl);
  return decMessage(info(t), t.decode(bytes) as unknown as Obj, t.name) as Record<string, unknown>;
}

/** {'@type': url, ...fields} -> google.protobuf.Any ({type_url, value}), as grpc-js sends it. */
export function encodeAny(obj: { '@type': string } & object): AnyMessage & { value: Buffer } {
  const path = typeof obj['@type'] === 'string' ? obj['@type'].slice(obj['@type'].lastIndexOf('.') + 1) : 'Any';
  const a = encAnyAt(obj, path) as { type_url: string; value: Uint8Array };
  return { type_url: a.type_url, value: toBuffer(a.value) };
}

/** google.protobuf.Any ({type_url, value}) -> {'@type': url, ...fields}. */
export function decodeAny(any: AnyMessage): Record<string, unknown> {
  const url = any.type_url;
  return decAnyAt({ type_url: url, value: any.value }, typeof url === 'string' ? url.slice(url.lastIndexOf('.') + 1) : 'Any');
}

/** A snapshot resource (Listener, RouteConfiguration, Cluster, ...) as Envoy wire bytes. */
export function encodeSnapshotResource(typeUrl: string, obj: object): Buffer {
  return encodeResource(typeUrl, snapshotResourceToProto(typeUrl, obj));
}

/** Wire bytes back into the exact snapshot object `encodeSnapshotResource` was given. */
export function decodeSnapshotResource(typeUrl: string, bytes: Uint8Array): Record<string, unknown> {
  return protoToSnapshotResource(typeUrl, decodeResource(typeUrl, bytes));
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}
