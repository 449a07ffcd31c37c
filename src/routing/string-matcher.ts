// Envoy StringMatcher → a predicate, compiled once per config version.
import { fullMatchRegExp } from '../config/regex.js';
import type { StringMatcher } from '../controlplane/snapshot.js';

export type StringPredicate = (value: string) => boolean;

export function compileStringMatcher(m: StringMatcher): StringPredicate {
  if (m.safe_regex) {
    const re = fullMatchRegExp(m.safe_regex.regex, m.ignore_case);
    return (v) => re.test(v);
  }
  if (m.exact !== undefined) {
    const want = m.ignore_case ? m.exact.toLowerCase() : m.exact;
    return m.ignore_case ? (v) => v.toLowerCase() === want : (v) => v === want;
  }
  if (m.prefix !== undefined) {
    const want = m.ignore_case ? m.prefix.toLowerCase() : m.prefix;
    return m.ignore_case ? (v) => v.toLowerCase().startsWith(want) : (v) => v.startsWith(want);
  }
  return () => true;
}
