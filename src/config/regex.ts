// Istio regexes are RE2, matched against the whole value (Envoy's safe_regex). JavaScript's RegExp
// accepts a superset; these checks reject what RE2 would reject, so a config that validates here
// also means the same thing to Envoy and to proxyless gRPC clients.

const RE2_UNSUPPORTED: Array<[RegExp, string]> = [
  [/\(\?[=!]/, 'lookahead (?= / ?!) is not supported by RE2'],
  [/\(\?<[=!]/, 'lookbehind (?<= / ?<!) is not supported by RE2'],
  [/\\[1-9]/, 'backreferences (\\1) are not supported by RE2'],
  [/\\k</, 'named backreferences are not supported by RE2'],
];

/** Why a regex is not acceptable, or undefined when it is valid RE2 (as far as JS can tell). */
export function regexProblem(re: unknown): string | undefined {
  if (typeof re !== 'string') return 'must be a string';
  for (const [pat, msg] of RE2_UNSUPPORTED) if (pat.test(stripEscapedBackslashes(re))) return `invalid regex "${re}": ${msg}`;
  try {
    new RegExp(translate(re), 'u');
  } catch (e) {
    return `invalid regex "${re}": ${(e as Error).message.replace(/^Invalid regular expression: /, '')}`;
  }
  return undefined;
}

/** A RegExp that matches the whole value, as Envoy's safe_regex does. */
export function fullMatchRegExp(re: string, ignoreCase = false): RegExp {
  return new RegExp(`^(?:${translate(re)})$`, ignoreCase ? 'iu' : 'u');
}

/** A RegExp for substitution (Envoy's regex_rewrite): global, not anchored. */
export function searchRegExp(re: string): RegExp {
  return new RegExp(translate(re), 'gu');
}

// RE2 spells named groups `(?P<name>...)`; JS spells them `(?<name>...)`.
function translate(re: string): string {
  return re.replace(/\(\?P</g, '(?<');
}

function stripEscapedBackslashes(re: string): string {
  return re.replace(/\\\\/g, '');
}
