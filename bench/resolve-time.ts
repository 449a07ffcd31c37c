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
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseYamlText } from '../src/config/load.js';
import { DEFAULT_MESH_CONFIG, type Resource } from '../src/config/types.js';
import type * as Resolve from '../src/controlplane/resolve.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
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
  for (let i = 0; i < 10_000; i++) {
    docs.push(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-${i}, namespace: bench}
spec:
  hosts: ['vs-${i}.bench.local']
  gateways: [bench-gateway]
  http:
  - name: a
    match: [{headers: {x-bench-variant: {exact: a}}}]
    route: [{destination: {host: upstream.bench.svc.cluster.local, port: {number: 80}}}]
  - name: b
    match: [{headers: {x-bench-variant: {exact: b}}}]
    route: [{destination: {host: upstream.bench.svc.cluster.local, port: {number: 80}}}]
`);
  }
  return docs.join('---\n');
}

function mesh1k(): string {
  const docs = [
    `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*/*"]
`,
  ];
  for (let i = 0; i < 1000; i++) {
    const h = `svc-${i}.default.svc.cluster.local`;
    const a = `10.${(i >> 8) & 255}.${i & 255}`;
    docs.push(
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-${i}, namespace: default}
spec:
  hosts: [${h}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: ${a}.1, labels: {version: v1}}
  - {address: ${a}.2, labels: {version: v2}}
`,
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-${i}, namespace: default}
spec:
  host: ${h}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`,
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-${i}, namespace: default}
spec:
  hosts: [${h}]
  gateways: [istio-system/gw${i % 2 === 0 ? ', mesh' : ''}]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    timeout: 5s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}
    route: [{destination: {host: ${h}, subset: v2, port: {number: 8080}}}]
  - name: default
    match: [{headers: {x-user: {prefix: "u-"}}}, {uri: {prefix: /}}]
    timeout: 10s
    retries: {attempts: 2, retryOn: "connect-failure,refused-stream"}
    route: [{destination: {host: ${h}, subset: v1, port: {number: 8080}}}]
`,
    );
  }
  return docs.join('---\n');
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
for (const [name, text] of [['swap10k', swap10k()], ['mesh1k', mesh1k()]] as const) {
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
