// Istio durations are protobuf Durations written as strings: `1.5s`, `300ms`, `1m`, `2h`, `100us`.
// Istio's CRDs accept Go duration syntax for most fields; Gatehouse accepts the same forms.

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 };
const PART = /(\d+(?:\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns)/y;

/** Milliseconds for a duration string, or undefined when it is not one. */
export function parseDurationMs(text: string): number | undefined {
  if (typeof text !== 'string' || text.length === 0) return undefined;
  let i = 0;
  let total = 0;
  while (i < text.length) {
    PART.lastIndex = i;
    const m = PART.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? NaN);
    i = PART.lastIndex;
  }
  return Number.isFinite(total) ? total : undefined;
}

export function durationProblem(text: unknown): string | undefined {
  if (typeof text !== 'string') return 'must be a duration string such as "1.5s" or "300ms"';
  const ms = parseDurationMs(text);
  if (ms === undefined) return `invalid duration "${text}": use a number with a unit (h, m, s, ms, us), e.g. "1.5s" or "300ms"`;
  return undefined;
}
