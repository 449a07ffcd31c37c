/**
 * resolve() before and after, in one process: `npx tsx bench/resolve-time.ts [ref]` extracts
 * `src/` of a git ref (default `main`) into bench/.resolve-baseline/<commit>/, copies the working
 * tree's `src/` beside it (so that neither side shares module instances with the parser the bench
 * itself uses), and times both resolve()s alternately on the same parsed resources:
 *  - swap10k: the config swap scenario of bench/run.ts (its Gateway and ServiceEntries, plus
 *    10,000 VirtualServices with two header-matched routes each, bound to the Gateway);
 *  - mesh1k: bench/xds.ts's build shape (1,000 services, each a ServiceEntry, a DestinationRule
 *    with two subsets and a VirtualService; every other VirtualService bound to `mesh` too).
 * Prints the median and minimum CPU time (user + system of the process, so that other work on
 * the machine counts less than in wall time) of RESOLVE_RUNS (default 7) runs per side. Asserts nothing.
 * `node --expose-gc --import tsx bench/resolve-time.ts` collects garbage outside the timed runs.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseYamlText } from '../src/config/load.js';
import { DEFAULT_MESH_CONFIG, type Resource } from '../src/config/types.js';
import type * as Resolve from '../src/controlplane/resolve.js';
import { REPO } from './lib/common.js';
import { routesYaml, servicesYaml } from './lib/configs.js';

const REF = process.argv[2] ?? 'main';
const RUNS = Math.max(1, Number(process.env.RESOLVE_RUNS) || 7);
const OPTS: Resolve.ResolveOptions = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };

function swap10k(): string {
  const docs = [
    `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gateway, namespace: bench}
spec:
  selector: {}
  servers:
  - port: {number: 8080, protocol: HTTP, name: http}
    hosts: ['*']
`,
    `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: bench}
spec:
  hosts: [upstream.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9000}}]
`,
  ];
  // run.ts's config-swap VirtualServices, the same generator.
  return docs.join('---\n') + routesYaml(10_000);
}

function parse(text: string): Resource[] {
  const { resources, problems } = parseYamlText(text, '/bench/resolve.yaml');
  if (problems.length > 0) throw new Error(`generated config has problems: ${problems[0]!.message}`);
  return resources;
}

async function working(): Promise<typeof Resolve> {
  const dir = path.join(REPO, 'bench', '.resolve-baseline', 'working-tree');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  cpSync(path.join(REPO, 'src'), path.join(dir, 'src'), { recursive: true });
  return (await import(pathToFileURL(path.join(dir, 'src/controlplane/resolve.ts')).href)) as typeof Resolve;
}

async function baseline(): Promise<typeof Resolve> {
  const commit = execFileSync('git', ['rev-parse', REF], { cwd: REPO, encoding: 'utf8' }).trim();
  const dir = path.join(REPO, 'bench', '.resolve-baseline', commit);
  if (!existsSync(path.join(dir, 'src'))) {
    mkdirSync(dir, { recursive: true });
    execFileSync('sh', ['-c', `git archive ${commit} src | tar -x -C ${JSON.stringify(dir)}`], { cwd: REPO });
  }
  console.log(`baseline: ${REF} (${commit.slice(0, 12)}), extracted in ${path.relative(REPO, dir)}`);
  return (await import(pathToFileURL(path.join(dir, 'src/controlplane/resolve.ts')).href)) as typeof Resolve;
}

const gc = (globalThis as { gc?: () => void }).gc;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// Which side is loaded and warmed first (RESOLVE_FIRST=after swaps them), to see any bias of the order.
const afterFirst = process.env.RESOLVE_FIRST === 'after';
const current = afterFirst ? await working() : undefined;
const before = await baseline();
const after = current ?? (await working());
const rows: string[] = ['| config | resources | before median (min) CPU ms | after median (min) CPU ms | after/before | same hash |', '|---|---:|---:|---:|---:|---|'];
for (const [name, text] of [['swap10k', swap10k()], ['mesh1k', servicesYaml(1000, true)]] as const) {
  const resources = parse(text);
  const times = { before: [] as number[], after: [] as number[] };
  const hashes = { before: '', after: '' };
  // Warm both (JIT), then alternate so that drift hits both sides alike.
  for (let i = 0; i < 3; i++) {
    if (afterFirst) hashes.after = after.resolve(resources, OPTS).hash;
    hashes.before = before.resolve(resources, OPTS).hash;
    if (!afterFirst) hashes.after = after.resolve(resources, OPTS).hash;
  }
  for (let i = 0; i < RUNS; i++) {
    for (const side of (i % 2 === 0) !== afterFirst ? (['before', 'after'] as const) : (['after', 'before'] as const)) {
      const impl = side === 'before' ? before : after;
      // The previous run's garbage is collected outside the timed window (with --expose-gc).
      gc?.();
      // CPU time of this process, not wall time: other processes on the box do not count.
      const c0 = process.cpuUsage();
      impl.resolve(resources, OPTS);
      const c = process.cpuUsage(c0);
      times[side].push((c.user + c.system) / 1000);
    }
  }
  const b = median(times.before);
  const a = median(times.after);
  rows.push(`| ${name} | ${resources.length} | ${b.toFixed(0)} (${Math.min(...times.before).toFixed(0)}) | ${a.toFixed(0)} (${Math.min(...times.after).toFixed(0)}) | ${(a / b).toFixed(2)} | ${hashes.before === hashes.after ? 'yes' : `NO: ${hashes.before} vs ${hashes.after}`} |`);
}
console.log(`\nresolve(), ${RUNS} runs per side, Node ${process.version}\n`);
console.log(rows.join('\n'));
