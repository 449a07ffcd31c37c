// The report: the header of a run, a line per measured round, the markdown tables (medians per
// scenario and target, ratios, notes; the hot-path targets), and bench/results/latest.{md,json}.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fmt, gitCommit, grpcVersion, median, ratio, REPO } from './common.js';
import type { Figures, Sample, Scenario, Settings, Target, TargetName } from './types.js';
import { GRPC_CHANNELS, GRPC_MAX_INFLIGHT, SMALL_BODY } from './wire.js';

/** The lines above the tables: date, commit, machine, run shape, load generators, targets. */
export function reportHeader(s: Settings, targets: Target[], nginxVersion: string | undefined): string[] {
  const cpuModel = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
  const header = [
    `# Gatehouse bench, ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`,
    '',
    `commit ${gitCommit()} · node ${process.version} · ${os.cpus().length} × ${cpuModel} · ` +
      `${s.rounds} round(s) × ${s.duration} s, warm-up ${s.warmup} s, ${s.connections} connections · ${s.client === 'wrk' ? 'wrk 4 (1 thread) for plain HTTP, autocannon 9 in the bench process for HTTPS' : 'autocannon 9 in the bench process'}` +
      (s.scenarios.some((sc) => sc.kind === 'h2') ? ' · h2: h2load (nghttp2, 1 thread)' : '') +
      (s.scenarios.some((sc) => sc.kind === 'grpc') ? (s.grpcClient === 'h2load' ? ' · gRPC: h2load over h2c' : ` · gRPC: a grpc-js ${grpcVersion()} loop`) : ''),
    `workers: ${s.workers} (gateway --workers ${s.workers}, nginx worker_processes ${s.workers}; BENCH_WORKERS)` +
      (os.cpus().length <= s.workers ? ` · ${os.cpus().length} cores: the client, upstream and proxy share them, so this box cannot show scaling` : ''),
    `targets: ${targets.map((t) => (t.name === 'nginx' ? `nginx (${nginxVersion}, ${s.workers === 1 ? '1 process' : `${s.workers} worker processes`}, upstream keepalive 64)` : t.name)).join(', ')}` +
      (s.gatewayArgs.length || s.gatewayNodeArgs.length ? ` · gateway flags: ${[...s.gatewayNodeArgs, ...s.gatewayArgs].join(' ')}` : ''),
  ];
  return header;
}

/** The progress line of one measured round. */
export function roundLine(s: Settings, sc: Scenario, round: number, t: Target, sample: Sample): string {
  return (
    `${sc.title.padEnd(12)} round ${round}/${s.rounds} ${t.name.padEnd(8)} ${fmt(sample.rps).padStart(8)} req/s  p50 ${fmt(sample.p50, 2)} ms  p99 ${fmt(sample.p99, 2)} ms` +
    (sample.cpuUsPerReq !== undefined ? `  ${fmt(sample.cpuUsPerReq, 1)} µs/req` : '') +
    (sample.cpuSplit ? `  CPU by process ${sample.cpuSplit.join('/')}%` : '') +
    (sample.non2xx || sample.errors ? `  non-2xx ${sample.non2xx} errors ${sample.errors}` : '') +
    (sample.errorDetail ? ` (${sample.errorDetail})` : '') +
    '\n'
  );
}

/**
 * The hot-path issue's targets against this run (one worker, same run as nginx). A target that
 * this run did not measure says so. Never asserted anywhere: a table to read.
 */
function targetsTable(s: Settings, sum: ReturnType<typeof summarize>, figures: Figures): string[] {
  const by = (id: string, t: TargetName) => sum.find((x) => x.row.scenario.id === id && x.row.target === t);
  const rows: string[] = [];
  const verdict = (ok: boolean | undefined, floorOk?: boolean): string => (ok === undefined ? 'not measured' : ok ? 'met' : floorOk ? 'missed (above the floor)' : 'missed');
  const g = by('get', 'gateway');
  const n = by('get', 'nginx');
  if (g && n) {
    const r = g.rps / n.rps;
    const cpu = g.cpu;
    rows.push(`| small GET req/s vs nginx | ≥ 0.6× (floor 0.45×) | ${r.toFixed(2)}× | ${verdict(r >= 0.6, r >= 0.45)} |`);
    rows.push(`| small GET CPU per request | ≤ 25 µs (floor 35 µs) | ${fmt(cpu, 1)} µs (nginx ${fmt(n.cpu, 1)} µs) | ${verdict(cpu === undefined ? undefined : cpu <= 25, cpu !== undefined && cpu <= 35)} |`);
    rows.push(`| small GET p99 vs nginx | ≤ 2× | ${(g.p99 / n.p99).toFixed(2)}× | ${verdict(g.p99 / n.p99 <= 2)} |`);
  } else rows.push('| small GET vs nginx | ≥ 0.6×, ≤ 25 µs, p99 ≤ 2× | – | not measured (needs get with gateway and nginx) |');
  for (const [id, title] of [['get16k', '16 KiB GET'], ['post64k', '64 KiB POST']] as const) {
    const a = by(id, 'gateway');
    const b = by(id, 'nginx');
    if (a && b) rows.push(`| ${title} req/s vs nginx | ≥ 0.5× | ${(a.rps / b.rps).toFixed(2)}× | ${verdict(a.rps / b.rps >= 0.5)} |`);
    else rows.push(`| ${title} req/s vs nginx | ≥ 0.5× | – | not measured |`);
  }
  // Issue 18's targets (hot path, round two).
  const gp = by('policy', 'gateway');
  if (g?.cpu !== undefined && gp?.cpu !== undefined) {
    const r = gp.cpu / g.cpu;
    rows.push(`| policy route CPU per request vs plain GET (issue 18) | ≤ 1.10× | ${r.toFixed(2)}× (${fmt(gp.cpu, 1)} vs ${fmt(g.cpu, 1)} µs) | ${verdict(r <= 1.1)} |`);
  } else rows.push('| policy route CPU per request vs plain GET (issue 18) | ≤ 1.10× | – | not measured (needs get and policy) |');
  if (g?.cpu !== undefined) rows.push(`| small GET CPU per request (issue 18) | ≤ 24 µs | ${fmt(g.cpu, 1)} µs | ${verdict(g.cpu <= 24)} |`);
  for (const [id, title] of [['h2', 'h2 (TLS) GET'], ['grpc', 'gRPC unary']] as const) {
    const a = by(id, 'gateway');
    const b = by(id, 'nginx');
    if (a?.cpu !== undefined && b?.cpu !== undefined) rows.push(`| ${title} CPU per request vs nginx (issue 18) | ≤ 2× | ${(a.cpu / b.cpu).toFixed(2)}× (${fmt(a.cpu, 1)} vs ${fmt(b.cpu, 1)} µs) | ${verdict(a.cpu / b.cpu <= 2)} |`);
    else rows.push(`| ${title} CPU per request vs nginx (issue 18) | ≤ 2× | – | not measured |`);
  }
  const idle = figures.idle;
  const loaded = figures.idleLoaded ? `; the gateway that ran the scenarios: ${fmt(figures.idleLoaded.rss * 1.048576, 0)} MB` : '';
  const st = figures.startup;
  rows.push(st ? `| idle RSS, fresh gateway on the bundled config, one worker | ≤ 80 MB | ${fmt(st.rss * 1.048576, 0)} MB (${fmt(st.rss, 0)} MiB) | ${verdict(st.rss * 1.048576 <= 80)} |` : '| idle RSS, fresh gateway on the bundled config, one worker | ≤ 80 MB | – | not measured (BENCH_EXTRA=0) |');
  rows.push(idle ? `| RSS with ${fmt(idle.open)} idle keep-alive connections (fresh gateway) | ≤ 150 MB | ${fmt(idle.rss * 1.048576, 0)} MB (${fmt(idle.rss, 0)} MiB)${loaded} | ${verdict(idle.rss * 1.048576 <= 150)} |` : '| RSS with 10,000 idle keep-alive connections | ≤ 150 MB | – | not measured (BENCH_EXTRA=0) |');
  const sw = figures.swap;
  rows.push(sw ? `| 10,000-route config swap: longest time without a response | < 200 ms | ${fmt(sw.gapMs)} ms | ${verdict(sw.gapMs < 200)} |` : '| 10,000-route config swap stall | < 200 ms | – | not measured (BENCH_EXTRA=0) |');
  rows.push(sw ? `| 10,000-route config swap: p99 inside vs outside the swap | ≤ 2× | ${sw.p99Ratio.toFixed(2)}× | ${verdict(sw.p99Ratio <= 2)} |` : '| config swap p99 | ≤ 2× | – | not measured |');
  rows.push(`| CPU per request, 2 workers vs 1 | unchanged | – | \`BENCH_SCALING=1\` measures 1 and 2 workers (processes, threads) beside nginx's 1 and 2${os.cpus().length <= 2 ? ' (this box has 2 cores: read the × against nginx\'s and the CPU split)' : ''} |`);
  return ['', `### Targets (workers: ${s.workers})`, '', '| target | wanted | this run | verdict |', '|---|---|---|---|', ...rows];
}

export interface Row {
  scenario: Scenario;
  target: TargetName;
  samples: Sample[];
  peakRss?: number;
}

export function summarize(rows: Row[]) {
  return rows.map((row) => {
    const cpu = row.samples.map((x) => x.cpuUsPerReq).filter((x): x is number => x !== undefined);
    return {
      row,
      rps: median(row.samples.map((x) => x.rps)),
      p50: median(row.samples.map((x) => x.p50)),
      p99: median(row.samples.map((x) => x.p99)),
      non2xx: row.samples.reduce((a, x) => a + x.non2xx, 0),
      errors: row.samples.reduce((a, x) => a + x.errors, 0),
      cpu: cpu.length ? median(cpu) : undefined,
      client: median(row.samples.map((x) => x.clientCpuPct)),
    };
  });
}

export function report(s: Settings, rows: Row[], header: string[], notes: string[]): string {
  const sum = summarize(rows);
  const out: string[] = [...header, ''];
  out.push('| scenario | target | req/s | p50 ms | p99 ms | non-2xx | errors | CPU µs/req | peak RSS MiB | client CPU % |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of sum) {
    out.push(
      `| ${x.row.scenario.title} | ${x.row.target} | ${fmt(x.rps)} | ${fmt(x.p50, 2)} | ${fmt(x.p99, 2)} | ${x.non2xx} | ${x.errors} | ${fmt(x.cpu, 1)} | ${fmt(x.row.peakRss, 0)} | ${fmt(x.client)} |`,
    );
  }
  out.push('');
  out.push(
    `Medians of ${s.rounds} interleaved round(s) of ${s.duration} s, ${s.connections} connections; non-2xx and errors are totals over the rounds. ` +
      'CPU µs/req = (utime+stime of the target process tree over the window) / responses; peak RSS = VmHWM since start. ' +
      'Client CPU % = the load generator: the wrk process, or this process for autocannon / the grpc-js loop / the ws loop (100 = one core): near 100 means the client, not the target, is the limit.' +
      (s.scenarios.some((sc) => sc.kind === 'grpc')
        ? s.grpcClient === 'h2load'
          ? ` gRPC: h2load, ${GRPC_CHANNELS} connections with ${Math.min(s.connections, GRPC_MAX_INFLIGHT)} calls in flight in all; req/s = calls answered 2xx per second (h2load does not read grpc-status; the check before the rounds made one grpc-js call that ended OK).`
          : ` gRPC: req/s = OK calls/s from ${GRPC_CHANNELS} grpc-js clients (one HTTP/2 connection each) with ${Math.min(s.connections, GRPC_MAX_INFLIGHT)} calls in flight in all; errors = calls that did not end OK with ${SMALL_BODY.length} B.`
        : ''),
  );
  const by = (sc: Scenario, t: TargetName) => sum.find((x) => x.row.scenario === sc && x.row.target === t);
  if (s.targets.includes('gateway')) {
    // With BENCH_TARGETS naming `bare`: the gateway against PERFORMANCE.md's bare uWS + undici proxy.
    const bare = s.targets.includes('bare');
    out.push('', `| scenario | gateway/direct req/s | gateway/nginx req/s | gateway/nginx CPU µs/req | gateway/nginx p99 |${bare ? ' gateway/bare CPU µs/req |' : ''}`);
    out.push(`|---|---:|---:|---:|---:|${bare ? '---:|' : ''}`);
    for (const sc of s.scenarios) {
      const g = by(sc, 'gateway');
      const d = by(sc, 'direct');
      const n = by(sc, 'nginx');
      const b = by(sc, 'bare');
      out.push(`| ${sc.title} | ${ratio(g?.rps, d?.rps)} | ${ratio(g?.rps, n?.rps)} | ${ratio(g?.cpu, n?.cpu)} | ${ratio(g?.p99, n?.p99)} |${bare ? ` ${ratio(g?.cpu, b?.cpu)} |` : ''}`);
    }
  }
  if (notes.length) out.push('', ...notes.map((n) => `- ${n}`));
  return out.join('\n') + '\n';
}

export function targetsReport(s: Settings, rows: Row[], figures: Figures): string {
  return targetsTable(s, summarize(rows), figures).join('\n') + '\n';
}

/** bench/results/latest.md (the report) and latest.json (the medians, read by bench/check.ts). */
export function writeResults(s: Settings, rows: Row[], md: string): void {
  const resultsDir = path.join(REPO, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  fs.writeFileSync(path.join(resultsDir, 'latest.md'), md);
  // Machine-readable medians, read by bench/check.ts (npm run bench:check).
  const json = summarize(rows).map((x) => ({ scenario: x.row.scenario.id, target: x.row.target, rps: x.rps, p50: x.p50, p99: x.p99, cpuUsPerReq: x.cpu ?? null, non2xx: x.non2xx, errors: x.errors }));
  fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify({ date: new Date().toISOString(), commit: gitCommit(), rounds: s.rounds, duration: s.duration, rows: json }, null, 2));
  process.stdout.write(`\nwritten to ${path.relative(process.cwd(), path.join(resultsDir, 'latest.md')) || 'bench/results/latest.md'}\n`);
}
