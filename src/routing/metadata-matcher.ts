// Envoy's MetadataMatcher / ValueMatcher → predicates over a request's dynamic metadata, compiled
// once per config version. Istio uses them for JWT claim routing: the claim at
// `payload.<claim>...` of the JWT filter's metadata, as a string or a list with a matching string.
// Semantics as Envoy's (source/common/common/matchers.cc, metadata.cc): the path walks Struct keys
// only (a list or scalar on the way means "no value"); an absent value matches nothing but an
// inverted matcher; a string matcher matches strings only (never numbers or booleans).
import type { FilterMetadata, MetadataMatcher, StringMatcher, ValueMatcher } from '../controlplane/snapshot.js';
import { fullMatchRegExp } from '../config/regex.js';
import { compileStringMatcher } from './string-matcher.js';

export type MetadataPredicate = (md: FilterMetadata | undefined) => boolean;
type ValuePredicate = (v: unknown) => boolean;

const isStruct = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

export function compileMetadataMatcher(m: MetadataMatcher): MetadataPredicate {
  const filter = m.filter;
  const keys = m.path.map((p) => p.key);
  const test = compileValueMatcher(m.value);
  const invert = m.invert === true;
  return (md) => {
    // Own properties only: metadata keys come from token payloads.
    let v: unknown = md !== undefined && Object.hasOwn(md, filter) ? md[filter] : undefined;
    for (let i = 0; i < keys.length && v !== undefined; i++) v = isStruct(v) && Object.hasOwn(v, keys[i]!) ? v[keys[i]!] : undefined;
    return test(v) !== invert;
  };
}

function compileValueMatcher(m: ValueMatcher): ValuePredicate {
  if (m.string_match) {
    const s = compileStringMatcher(m.string_match);
    return (v) => typeof v === 'string' && s(v);
  }
  if (m.list_match) {
    const one = compileValueMatcher(m.list_match.one_of);
    return (v) => Array.isArray(v) && v.some(one);
  }
  if (m.or_match) {
    const any = m.or_match.value_matchers.map(compileValueMatcher);
    return (v) => any.some((t) => t(v));
  }
  if (m.null_match) return (v) => v === null;
  if (m.bool_match !== undefined) {
    const b = m.bool_match;
    return (v) => v === b;
  }
  if (m.present_match !== undefined) return m.present_match ? (v) => v !== undefined : () => false;
  if (m.double_match) {
    const d = m.double_match;
    if (d.exact !== undefined) return (v) => v === d.exact;
    if (d.range) {
      const { start, end } = d.range;
      return (v) => typeof v === 'number' && v >= start && v < end;
    }
  }
  throw new TypeError(`unsupported value matcher ${JSON.stringify(m)}`);
}

/** Throws what compiling would throw (invalid regexes, matchers Gatehouse does not know), without building it. */
export function checkMetadataMatcher(m: MetadataMatcher): void {
  if (!m.filter || m.path.length === 0 || m.path.some((p) => !p.key)) throw new TypeError(`metadata matcher needs a filter and a non-empty path: ${JSON.stringify(m)}`);
  checkValueMatcher(m.value);
}

function checkValueMatcher(m: ValueMatcher): void {
  if (m.string_match) return checkString(m.string_match);
  if (m.list_match) return checkValueMatcher(m.list_match.one_of);
  if (m.or_match) {
    for (const x of m.or_match.value_matchers) checkValueMatcher(x);
    return;
  }
  if (m.null_match || m.bool_match !== undefined || m.present_match !== undefined || m.double_match?.exact !== undefined || m.double_match?.range) return;
  throw new TypeError(`unsupported value matcher ${JSON.stringify(m)}`);
}

function checkString(m: StringMatcher): void {
  if (m.safe_regex) fullMatchRegExp(m.safe_regex.regex, m.ignore_case);
}
