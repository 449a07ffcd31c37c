// BENCH_SCALING=1 (issue 18, target 6): the run's scenarios against fresh gateways with 1 worker,
// 2 worker processes (the default --worker-mode) and 2 worker threads, and against nginx with 1
// and 2 worker processes, one after the other in each round (BENCH_ROUNDS rounds, medians). The
// table gives req/s and CPU µs/req per setup, each 2-worker setup as × its 1-worker figure, and
// how the gateway's CPU split over its processes. On a box whose cores the client and the upstream
// share, nothing can double: compare the gateway's × with nginx's, and read the CPU split.
import { fmt, median } from '../common.js';
import { load } from '../load/index.js';
import { stopChild } from '../proc.js';
import { startGateway } from '../targets/gateway.js';
import { startNginx } from '../targets/nginx.js';
import type { CertPaths, Sample, Scenario, Settings, Target } from '../types.js';
import type { Upstream } from '../upstream.js';

interface Setup {
  label: string;
  /** `name`: the child's name and temp folder, fresh per round. */
  start: (name: string) => Promise<Target | undefined>;
}

/** Scenarios whose listener kinds differ: plain HTTP on uWS, the strict engine, h2 over TLS, h2c gRPC. */
const KINDS = new Set(['get', 'get-strict', 'h2', 'grpc', 'https', 'post64k']);

export async function scaling(s: Settings, up: Upstream, cert: CertPaths | undefined, tmp: string, notes: string[]): Promise<string[]> {
  const scenarios = s.scenarios.filter((sc) => KINDS.has(sc.id));
  if (scenarios.length === 0) return ['', '### Scaling', '', `None of the run's scenarios is one of ${[...KINDS].join(', ')}.`];
  const withWorkers = (workers: number, args: string[] = []): Settings => ({ ...s, workers, gatewayArgs: [...s.gatewayArgs, ...args] });
  const setups: Setup[] = [
    { label: 'gateway, 1 worker', start: (name) => startGateway(withWorkers(1), tmp, up, cert, name, 0) },
    { label: 'gateway, 2 processes', start: (name) => startGateway(withWorkers(2, ['--worker-mode', 'processes']), tmp, up, cert, name, 0) },
    { label: 'gateway, 2 threads', start: (name) => startGateway(withWorkers(2, ['--worker-mode', 'threads']), tmp, up, cert, name, 0) },
    { label: 'nginx, 1 worker', start: async (name) => (await startNginx(tmp, up, cert, notes, { routes: 0, workerConnections: 1024, name, workers: 1 }))?.target },
    { label: 'nginx, 2 workers', start: async (name) => (await startNginx(tmp, up, cert, notes, { routes: 0, workerConnections: 1024, name, workers: 2 }))?.target },
  ];
  const samples = new Map<string, Sample[]>();
  const key = (sc: Scenario, label: string): string => `${sc.id}\0${label}`;
  // One setup at a time (each holds its own ports and processes), every scenario, then the next.
  for (let round = 1; round <= s.rounds; round++) {
    for (const [i, setup] of setups.entries()) {
      const t = await setup.start(`scaling-${i}-r${round}`);
      if (!t) continue;
      try {
        for (const sc of scenarios) {
          if (s.warmup > 0) await load(s, t, sc, s.warmup);
          const sample = await load(s, t, sc, s.duration);
          const list = samples.get(key(sc, setup.label)) ?? [];
          list.push(sample);
          samples.set(key(sc, setup.label), list);
          process.stdout.write(`scaling round ${round}/${s.rounds} ${sc.title} · ${setup.label}: ${fmt(sample.rps)} req/s, ${fmt(sample.cpuUsPerReq, 1)} µs/req${sample.cpuSplit ? `, CPU by process ${sample.cpuSplit.join('/')}%` : ''}\n`);
        }
      } finally {
        if (t.child) await stopChild(t.child);
      }
    }
  }
  const lines = ['', '### Scaling (BENCH_SCALING=1)', '', '| scenario | setup | req/s | × 1 worker | CPU µs/req | CPU by process (main/workers, per round) |', '|---|---|---:|---:|---:|---|'];
  for (const sc of scenarios) {
    for (const setup of setups) {
      const list = samples.get(key(sc, setup.label));
      if (!list) continue;
      const rps = median(list.map((x) => x.rps));
      const one = samples.get(key(sc, setup.label.startsWith('nginx') ? 'nginx, 1 worker' : 'gateway, 1 worker'));
      const base = one ? median(one.map((x) => x.rps)) : undefined;
      const cpu = list.map((x) => x.cpuUsPerReq).filter((x): x is number => x !== undefined);
      const split = list.map((x) => x.cpuSplit?.join('/')).filter(Boolean).join(', ');
      lines.push(`| ${sc.title} | ${setup.label} | ${fmt(rps)} | ${base && !setup.label.endsWith('1 worker') ? `×${(rps / base).toFixed(2)}` : '–'} | ${fmt(cpu.length ? median(cpu) : undefined, 1)} | ${split || '–'} |`);
    }
  }
  lines.push(
    '',
    `Fresh targets per round, one at a time, ${s.duration} s per scenario after ${s.warmup} s of warm-up, medians of ${s.rounds} round(s). ` +
      'Processes share each node:net port through the cluster primary and each uWS port with SO_REUSEPORT; threads serve node:net ports (strict, h2, gRPC) from worker 0 only.',
  );
  return lines;
}
