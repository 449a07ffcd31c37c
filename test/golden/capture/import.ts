// Turns the captures of setup.ts into golden cases under test/golden/captured/<test>-<n>/:
//   npx tsx test/golden/capture/import.ts /tmp/captures
// One case per distinct set of files; the label sets, namespaces and mesh configs it was resolved
// with become its variants (case.json), plus `validate`'s view (every Gateway) when the test did
// not resolve it that way. Files a configuration names by absolute path (certificates made in a
// temporary folder) are copied into the case (`_ext/`) and named relative to the YAML file, so a
// case reads the same on any machine. Replaces the whole captured/ folder.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { Capture, CaptureOptions } from './setup.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const OUT = join(ROOT, 'test/golden/captured');
const from = process.argv[2];
if (!from) throw new Error('usage: import.ts <capture dir>');

const sha = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 16);

interface Group {
  files: Record<string, string>;
  externals: Record<string, string>;
  relatives: Record<string, string>;
  origins: Set<string>;
  opts: Map<string, CaptureOptions>;
  sortKey: string;
}

const groups = new Map<string, Group>();
for (const f of readdirSync(from).sort()) {
  const c = JSON.parse(readFileSync(join(from, f), 'utf8')) as Capture;
  // Only YAML (and the PEM files beside it) makes a configuration; captures without a resource are skipped.
  if (!Object.keys(c.files).some((n) => /\.ya?ml$/i.test(n))) continue;
  const files = c.origin === 'resolve' ? Object.fromEntries(Object.entries(c.files).map(([n, t]) => [n, t.split('\n---\n').map((d) => stringify(JSON.parse(d))).join('---\n')])) : c.files;
  const key = sha(JSON.stringify([files, c.externals, c.relatives ?? {}]));
  let g = groups.get(key);
  if (!g) {
    g = { files, externals: c.externals, relatives: c.relatives ?? {}, origins: new Set(), opts: new Map(), sortKey: `${c.test}\0${key}` };
    groups.set(key, g);
  }
  g.origins.add(`${c.test} › ${c.name || '(setup)'}`);
  g.opts.set(JSON.stringify(c.opts), c.opts);
  if (`${c.test}\0${key}` < g.sortKey) g.sortKey = `${c.test}\0${key}`;
}

rmSync(OUT, { recursive: true, force: true });
const counters = new Map<string, number>();
for (const g of [...groups.values()].sort((a, b) => (a.sortKey < b.sortKey ? -1 : 1))) {
  const test = g.sortKey.split('\0')[0]!.split('/').pop()!.replace(/\.test\.ts$/, '') || 'unknown';
  const n = (counters.get(test) ?? 0) + 1;
  counters.set(test, n);
  const dir = join(OUT, `${test}-${String(n).padStart(3, '0')}`);
  mkdirSync(dir, { recursive: true });

  // External files: copied under _ext/, their absolute paths replaced by paths relative to the YAML.
  const ext = new Map<string, string>();
  const taken = new Set<string>();
  for (const abs of Object.keys(g.externals).sort()) {
    let name = abs.split('/').pop()!;
    for (let k = 2; taken.has(name); k++) name = `${k}-${abs.split('/').pop()}`;
    taken.add(name);
    ext.set(abs, `_ext/${name}`);
    mkdirSync(join(dir, '_ext'), { recursive: true });
    writeFileSync(join(dir, '_ext', name), g.externals[abs]!);
  }
  const byLength = [...ext.keys()].sort((a, b) => b.length - a.length);
  for (const [name, text0] of Object.entries(g.files)) {
    let text = text0;
    if (/\.ya?ml$/i.test(name)) {
      const up = posix.relative(posix.dirname(`x/${name}`), 'x') || '.';
      for (const abs of byLength) text = text.split(abs).join(up === '.' ? ext.get(abs)! : `${up}/${ext.get(abs)!}`);
    }
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  for (const [rel, text] of Object.entries(g.relatives)) {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), text);
  }

  const variants: Array<Record<string, unknown>> = [];
  let meshFiles = 0;
  const seen = new Set<string>();
  for (const o of [...g.opts.values()].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))) {
    const v: Record<string, unknown> = { name: `captured-${variants.length + 1}`, labels: o.labels ?? { istio: 'ingressgateway' }, namespace: o.namespace ?? 'istio-system', bind: o.bind ?? '0.0.0.0' };
    if (o.allGateways) v.allGateways = true;
    if (o.mesh !== undefined) v.mesh = o.mesh;
    else if (o.meshConfigText !== undefined) {
      // A dot file: the config loader skips it, as --mesh-config is not a config file.
      const file = `.mesh-config-${++meshFiles}.yaml`;
      writeFileSync(join(dir, file), o.meshConfigText);
      v.meshConfig = file;
    }
    variants.push(v);
    seen.add(JSON.stringify([v.labels, v.namespace, !!v.allGateways, v.mesh ?? v.meshConfig ?? null]));
  }
  const base = variants[0]!;
  if (!seen.has(JSON.stringify([{ istio: 'ingressgateway' }, 'istio-system', true, base.mesh ?? base.meshConfig ?? null]))) {
    variants.push({ ...base, name: 'all-gateways', labels: { istio: 'ingressgateway' }, namespace: 'istio-system', allGateways: true });
  }
  writeFileSync(join(dir, 'case.json'), JSON.stringify({ capturedFrom: [...g.origins].sort(), variants }, null, 1) + '\n');
}
console.log(`${groups.size} cases in ${OUT}`);
