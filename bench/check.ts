/**
 * The hot-path guard: `npm run bench:check` runs a short interleaved comparison (direct vs
 * Gatehouse; small GET and the full-policy route) and fails when Gatehouse's req/s ratio to the
 * direct upstream is more than 15% below the ratio recorded in bench/baseline.json. A ratio,
 * not req/s: the machine's speed cancels out, only the gateway's share of it counts.
 *
 *   npm run bench:check                   compare with the baseline (exit 1 on a regression)
 *   npm run bench:check -- --update       measure and record a new baseline
 *
 * It is not part of `npm test`: on a shared 2-core machine one run swings by ±30% (see
 * bench/README.md); the median of several rounds and the ratio to direct make it usable by hand
 * and on quiet CI runners. BENCH_CHECK_ROUNDS / BENCH_CHECK_DURATION change the run's length.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BASELINE = path.join(REPO, 'bench', 'baseline.json');
const RESULT = path.join(REPO, 'bench', 'results', 'latest.json');
/** A ratio more than this fraction below the baseline's fails the check. */
const TOLERANCE = 0.15;
const SCENARIOS = ['get', 'policy'];

interface Baseline {
  recorded: string;
  commit: string;
  machine: string;
  rounds: number;
  duration: number;
  ratios: Record<string, number>;
  /** The load generator the ratios were measured with (absent: autocannon, before wrk was the default). */
  client?: 'wrk' | 'autocannon';
}

interface ResultRow {
  scenario: string;
  target: string;
  rps: number;
}

function measure(client: 'wrk' | 'autocannon'): { ratios: Record<string, number>; commit: string; rounds: number; duration: number } {
  const rounds = process.env.BENCH_CHECK_ROUNDS ?? '3';
  const duration = process.env.BENCH_CHECK_DURATION ?? '4';
  const run = spawnSync(process.execPath, [...process.execArgv, path.join(REPO, 'bench', 'run.ts')], {
    cwd: REPO,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, BENCH_SCENARIOS: SCENARIOS.join(','), BENCH_TARGETS: 'direct,gateway', BENCH_ROUNDS: rounds, BENCH_DURATION: duration, BENCH_EXTRA: '0', BENCH_CLIENT: client, BENCH_WORKERS: '1' },
  });
  if (run.status !== 0) throw new Error(`bench/run.ts failed (exit ${run.status ?? run.signal})`);
  const result = JSON.parse(fs.readFileSync(RESULT, 'utf8')) as { commit: string; rounds: number; duration: number; rows: ResultRow[] };
  const ratios: Record<string, number> = {};
  for (const sc of SCENARIOS) {
    const g = result.rows.find((r) => r.scenario === sc && r.target === 'gateway');
    const d = result.rows.find((r) => r.scenario === sc && r.target === 'direct');
    if (!g || !d || !(d.rps > 0)) throw new Error(`no gateway/direct figures for ${sc} in ${RESULT}`);
    ratios[sc] = g.rps / d.rps;
  }
  return { ratios, commit: result.commit, rounds: result.rounds, duration: result.duration };
}

function main(): number {
  const update = process.argv.includes('--update');
  const old = fs.existsSync(BASELINE) ? (JSON.parse(fs.readFileSync(BASELINE, 'utf8')) as Baseline) : undefined;
  // Compared with the same load generator as the baseline (a ratio to direct depends on it).
  const client = update ? (process.env.BENCH_CLIENT === 'autocannon' ? 'autocannon' : 'wrk') : (old?.client ?? 'autocannon');
  const m = measure(client);
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, node ${process.version}`;
  if (update) {
    const b: Baseline = { recorded: new Date().toISOString(), commit: m.commit, machine, rounds: m.rounds, duration: m.duration, ratios: m.ratios, client };
    fs.writeFileSync(BASELINE, JSON.stringify(b, null, 2) + '\n');
    process.stdout.write(`\nbaseline written to bench/baseline.json: ${JSON.stringify(m.ratios)}\n`);
    return 0;
  }
  if (!old) {
    process.stderr.write('bench/baseline.json is missing: record one with `npm run bench:check -- --update`\n');
    return 1;
  }
  const b = old;
  let failed = false;
  process.stdout.write(`\n| scenario | gateway/direct now | baseline (${b.commit}, ${b.recorded.slice(0, 10)}) | floor (−${TOLERANCE * 100}%) | |\n|---|---:|---:|---:|---|\n`);
  for (const sc of SCENARIOS) {
    const now = m.ratios[sc]!;
    const base = b.ratios[sc];
    if (base === undefined) {
      process.stdout.write(`| ${sc} | ${now.toFixed(3)} | – | – | no baseline |\n`);
      continue;
    }
    const floor = base * (1 - TOLERANCE);
    const ok = now >= floor;
    if (!ok) failed = true;
    process.stdout.write(`| ${sc} | ${now.toFixed(3)} | ${base.toFixed(3)} | ${floor.toFixed(3)} | ${ok ? 'ok' : 'REGRESSION'} |\n`);
  }
  if (b.machine !== machine) process.stdout.write(`\nnote: the baseline was recorded on ${b.machine}; this is ${machine}.\n`);
  return failed ? 1 : 0;
}

try {
  process.exitCode = main();
} catch (err) {
  process.stderr.write(`bench:check failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
