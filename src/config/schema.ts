// A small, data-driven schema language for the Istio/Kubernetes documents Gatehouse reads.
// A schema checks a decoded YAML value and reports problems at field paths; an object schema is a
// table of field name → schema, so adding a field is one line. Unknown fields are errors (like
// kubectl's strict decoding); `null` is treated as absent (as Kubernetes does). Every schema also
// describes its shape, so that a test can walk it against Istio's API (every field known).
import type { FieldPath } from './types.js';
import { durationProblem, parseDurationMs } from './duration.js';
import { regexProblem } from './regex.js';

export interface Reporter {
  error(path: FieldPath, message: string): void;
  warn(path: FieldPath, message: string): void;
}

export type Check = (value: unknown, path: FieldPath, out: Reporter) => void;

/** What a schema accepts, for walking it by field path (not used to validate). */
export type Shape =
  | { readonly type: 'string'; readonly values?: readonly string[] }
  | { readonly type: 'integer' | 'number' | 'boolean' | 'any' }
  | { readonly type: 'list'; readonly item: Schema }
  | { readonly type: 'map'; readonly value: Schema }
  | { readonly type: 'object'; readonly fields: Readonly<Record<string, Schema>>; readonly open: boolean };

export interface Schema {
  readonly check: Check;
  readonly shape: Shape;
  /** The field must be present (checked by the enclosing object). */
  readonly required?: boolean;
  /** Valid Istio that Gatehouse ignores: a present value gets this warning. */
  readonly ignored?: string;
}

/** A rule over a whole object, run after its fields were checked. */
export type ObjectRule = (o: Record<string, unknown>, path: FieldPath, out: Reporter) => void;

// ---- value helpers ------------------------------------------------------------------------------

export function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
export const has = (o: Record<string, unknown>, k: string): boolean => o[k] !== undefined && o[k] !== null;
export const asObj = (v: unknown): Record<string, unknown> => (isObj(v) ? v : {});
export const asArr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
export const asStr = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
export const quote = (s: string): string => JSON.stringify(s);

// ---- modifiers -----------------------------------------------------------------------------------

export const req = (s: Schema): Schema => ({ ...s, required: true });
export const ignored = (s: Schema, why: string): Schema => ({ ...s, ignored: why });
/** Adds checks that run only when the schema's own check found nothing wrong. */
export function refine(s: Schema, ...extra: Check[]): Schema {
  return {
    ...s,
    check: (v, path, out) => {
      let failed = false;
      s.check(v, path, { error: (p, m) => ((failed = true), out.error(p, m)), warn: (p, m) => out.warn(p, m) });
      if (!failed) for (const e of extra) e(v, path, out);
    },
  };
}

// ---- scalars -------------------------------------------------------------------------------------

/** A string; `problem` returns why a value is not acceptable. */
export function str(problem?: (s: string) => string | undefined): Schema {
  return {
    shape: { type: 'string' },
    check: (v, path, out) => {
      if (typeof v !== 'string') return out.error(path, 'must be a string');
      const p = problem?.(v);
      if (p) out.error(path, p);
    },
  };
}

export function nonEmptyStr(): Schema {
  return str((s) => (s === '' ? 'must not be empty' : undefined));
}

export function bool(): Schema {
  return { shape: { type: 'boolean' }, check: (v, path, out) => void (typeof v !== 'boolean' && out.error(path, 'must be true or false')) };
}

function rangeMessage(min: number | undefined, max: number | undefined, v: number): string | undefined {
  if (min !== undefined && max !== undefined && (v < min || v > max)) return `must be between ${min} and ${max}, got ${v}`;
  if (min !== undefined && v < min) return `must be at least ${min}, got ${v}`;
  if (max !== undefined && v > max) return `must be at most ${max}, got ${v}`;
  return undefined;
}

export function int(min?: number, max?: number): Schema {
  return {
    shape: { type: 'integer' },
    check: (v, path, out) => {
      if (typeof v !== 'number' || !Number.isInteger(v)) return out.error(path, 'must be an integer');
      const m = rangeMessage(min, max, v);
      if (m) out.error(path, m);
    },
  };
}

export function num(min?: number, max?: number): Schema {
  return {
    shape: { type: 'number' },
    check: (v, path, out) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) return out.error(path, 'must be a number');
      const m = rangeMessage(min, max, v);
      if (m) out.error(path, m);
    },
  };
}

export const port = (): Schema => int(1, 65535);

/** One of the given strings; `caseInsensitive` as Istio parses protocols. */
export function oneOf(values: readonly string[], caseInsensitive = false): Schema {
  const set = new Set(caseInsensitive ? values.map((x) => x.toUpperCase()) : values);
  return {
    shape: { type: 'string', values },
    check: (v, path, out) => {
      if (typeof v !== 'string') return out.error(path, `must be a string, one of ${values.join(', ')}`);
      if (!set.has(caseInsensitive ? v.toUpperCase() : v)) out.error(path, `must be one of ${values.join(', ')}`);
    },
  };
}

export function intOneOf(values: readonly number[]): Schema {
  return {
    shape: { type: 'integer' },
    check: (v, path, out) => {
      if (typeof v !== 'number' || !values.includes(v)) out.error(path, `must be one of ${values.join(', ')}`);
    },
  };
}

export function duration(opts: { min?: number } = {}): Schema {
  return {
    shape: { type: 'string' },
    check: (v, path, out) => {
      const p = durationProblem(v);
      if (p) return out.error(path, p);
      const ms = parseDurationMs(v as string) ?? 0;
      if (opts.min !== undefined && ms < opts.min) out.error(path, `must be at least ${opts.min}ms, got "${v as string}"`);
    },
  };
}

export function regex(): Schema {
  return {
    shape: { type: 'string' },
    check: (v, path, out) => {
      const p = regexProblem(v);
      if (p) out.error(path, p);
    },
  };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Standard base64 as Go decodes Kubernetes `[]byte` fields (line breaks are ignored). */
export function isBase64(s: string): boolean {
  return BASE64.test(s.replace(/[\r\n]/g, ''));
}
export function base64(): Schema {
  return str((s) => (isBase64(s) ? undefined : 'must be base64-encoded'));
}

export function any(): Schema {
  return { shape: { type: 'any' }, check: () => undefined };
}

// ---- containers ----------------------------------------------------------------------------------

export function list(item: Schema, opts: { nonEmpty?: boolean; unique?: boolean } = {}): Schema {
  return {
    shape: { type: 'list', item },
    check: (v, path, out) => {
      if (!Array.isArray(v)) return out.error(path, 'must be a list');
      if (opts.nonEmpty && v.length === 0) out.error(path, 'must not be empty');
      const seen = new Set<string>();
      v.forEach((x, i) => {
        const p = [...path, i];
        if (x === null || x === undefined) return out.error(p, 'must not be null');
        item.check(x, p, out);
        if (opts.unique && typeof x === 'string') {
          if (seen.has(x)) out.error(p, `duplicate entry ${quote(x)}`);
          seen.add(x);
        }
      });
    },
  };
}

/** A mapping with free-form keys (labels, headers, ...). `key` says why a key is not acceptable. */
export function map(value: Schema, key?: (k: string) => string | undefined): Schema {
  return {
    shape: { type: 'map', value },
    check: (v, path, out) => {
      if (!isObj(v)) return out.error(path, 'must be a mapping');
      for (const [k, x] of Object.entries(v)) {
        const p = [...path, k];
        const kp = key?.(k);
        if (kp) out.error(p, kp);
        value.check(x, p, out);
      }
    },
  };
}

export interface ObjectSchema extends Schema {
  readonly fields: Readonly<Record<string, Schema>>;
}

/** A mapping with known fields; any other field is an error. */
export function obj(fields: Record<string, Schema>, ...rules: ObjectRule[]): ObjectSchema {
  return objectSchema(true, fields, rules);
}

/** Like `obj`, but other fields are allowed and not checked (for the parts of big documents we read). */
export function looseObj(fields: Record<string, Schema>, ...rules: ObjectRule[]): ObjectSchema {
  return objectSchema(false, fields, rules);
}

function objectSchema(strict: boolean, fields: Record<string, Schema>, rules: ObjectRule[]): ObjectSchema {
  return {
    fields,
    shape: { type: 'object', fields, open: !strict },
    check: (v, path, out) => {
      if (!isObj(v)) return out.error(path, 'must be a mapping');
      for (const [k, x] of Object.entries(v)) {
        const f = Object.hasOwn(fields, k) ? fields[k] : undefined;
        const p = [...path, k];
        if (!f) {
          if (strict) out.error(p, `unknown field ${quote(k)}`);
          continue;
        }
        if (x === null || x === undefined) continue;
        f.check(x, p, out);
        if (f.ignored) out.warn(p, f.ignored);
      }
      for (const [k, f] of Object.entries(fields)) {
        // At the field's own path; it has no line, so the problem carries its parent's.
        if (f.required && !has(v, k)) out.error([...path, k], 'missing required field');
      }
      for (const r of rules) r(v, path, out);
    },
  };
}

// ---- object rules --------------------------------------------------------------------------------

/** The keys that are set, in document order (so a problem points at the later one). */
export function setKeys(o: Record<string, unknown>, keys: readonly string[]): string[] {
  return Object.keys(o).filter((k) => keys.includes(k) && has(o, k));
}

/** Exactly one of the keys must be set. */
export function exactlyOne(...keys: string[]): ObjectRule {
  return (o, path, out) => {
    const set = setKeys(o, keys);
    if (set.length === 0) out.error(path, `must set one of ${keys.join(', ')}`);
    else if (set.length > 1) out.error([...path, set[1]!], `set only one of ${keys.join(', ')} (found ${set.join(' and ')})`);
  };
}

/** At most one of the keys may be set. */
export function atMostOne(...keys: string[]): ObjectRule {
  return (o, path, out) => {
    const set = setKeys(o, keys);
    if (set.length > 1) out.error([...path, set[1]!], `set only one of ${keys.join(', ')} (found ${set.join(' and ')})`);
  };
}
