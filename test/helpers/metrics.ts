// Minimal Prometheus text-format reader for asserting on the gateway's /stats/prometheus.
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let lm: RegExpExecArray | null;
    while ((lm = re.exec(m[2] ?? '')) !== null) labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Samples named `name` whose labels include every `want` entry (string equality or RegExp test). */
export function findSamples(samples: Sample[], name: string, want: Record<string, string | RegExp> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(want).every(([k, v]) => (typeof v === 'string' ? s.labels[k] === v : s.labels[k] !== undefined && v.test(s.labels[k]!))),
  );
}

export function sumSamples(samples: Sample[]): number {
  return samples.reduce((a, s) => a + s.value, 0);
}
