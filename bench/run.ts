/**
 * Gatehouse benchmark: the same load against the upstream directly, through Gatehouse and (when
 * `nginx` is on PATH) through nginx, interleaved round by round so drift hits every target alike.
 *
 *   npm run bench                       (builds dist/, then runs this file with tsx)
 *   BENCH_ROUNDS=3 BENCH_DURATION=10 npm run bench
 *
 * This file is the scenario table and the order of a run; the parts are in bench/lib/ (see
 * bench/README.md, "Layout"). Processes: this one is the load generator (wrk is a child; autocannon,
 * the grpc-js loop and the ws loop run in this process). The upstream is a child of its own
 * (bench/upstream-main.ts: HTTP, HTTPS and gRPC listeners), so its CPU is not mixed with the
 * client's. The gateway and nginx are children too. Every child is stopped by its PID, also on
 * errors and ^C. See bench/README.md for the knobs and for how to read the numbers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeCert } from './lib/cert.js';
import { envList, envNumber, REPO, sleep } from './lib/common.js';
import { POLICY_HEADERS, POLICY_HOST, POLICY_PATH, ROUTES_COUNT, ROUTES_HEADER, routesHost } from './lib/configs.js';
import { extras } from './lib/extras/index.js';
import { load, running, sanityCheck } from './lib/load/index.js';
import { ensureDebianPackage, peakRssMiB, stopAll, stopChild } from './lib/proc.js';
import { report, reportHeader, roundLine, targetsReport, writeResults, type Row } from './lib/report.js';
import { scaling } from './lib/extras/scaling.js';
import { servesScenario, startBare } from './lib/targets/bare.js';
import { directTarget } from './lib/targets/direct.js';
import { startGateway } from './lib/targets/gateway.js';
import { startNginx } from './lib/targets/nginx.js';
import { DEFAULT_TARGETS, TARGET_ORDER, type Figures, type Scenario, type Settings, type Target, type TargetName } from './lib/types.js';
import { startTraceReceiver } from './lib/trace-receiver.js';
import { serveUpstream, startUpstream, upstreamStats } from './lib/upstream.js';
import { BIG_BODY, GRPC_PATH, POST_SIZE, SMALL_BODY, WS_MESSAGE } from './lib/wire.js';

/** Every scenario runs against every target; BENCH_SCENARIOS picks some by id. */
const SCENARIOS: Scenario[] = [
  { id: 'get', title: 'GET 100 B', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  { id: 'get16k', title: 'GET 16 KiB', method: 'GET', path: '/16k', expectBytes: BIG_BODY.length },
  { id: 'post64k', title: 'POST 64 KiB', method: 'POST', path: '/upload', body: Buffer.alloc(POST_SIZE, 'p'), expectBytes: 3 },
  // The same two through the gateway's strict HTTP/1.1 engine (a second HTTP port whose Gateway is
  // annotated gatehouse.io/http1-engine: strict): what strict RFC 9112 parsing costs beside uWS.
  { id: 'get-strict', title: 'GET 100 B, strict engine', method: 'GET', path: '/', expectBytes: SMALL_BODY.length, strict: true },
  { id: 'post64k-strict', title: 'POST 64 KiB, strict engine', method: 'POST', path: '/upload', body: Buffer.alloc(POST_SIZE, 'p'), expectBytes: 3, strict: true },
  // The same small GET through issue 18's realistic policy route (bench/lib/configs.ts): a
  // header-matched rule in front, a regex URI match, header edits, timeout, retries, consistent
  // hashing + connection pool + outlier detection, an ALLOW AuthorizationPolicy (direct: the
  // upstream answers /policy/* too).
  { id: 'policy', title: 'GET 100 B, full policy', method: 'GET', path: POLICY_PATH, host: POLICY_HOST, headers: { ...POLICY_HEADERS }, expectBytes: SMALL_BODY.length },
  // TLS terminated by the target (keep-alive: record overhead, hardly any handshakes).
  { id: 'https', title: 'GET 100 B over HTTPS', kind: 'https', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  // HTTP/2 over TLS (ALPN h2, the browsers' protocol) from h2load: 64 connections, one stream each.
  { id: 'h2', title: 'GET 100 B over h2 (TLS)', kind: 'h2', method: 'GET', path: '/', expectBytes: SMALL_BODY.length },
  // Unary gRPC (100 B request, 100 B answer) from h2load (4 connections × 16 streams; the grpc-js
  // loop with BENCH_GRPC_CLIENT=grpc-js); req/s = 2xx calls/s (the sanity check verifies grpc-status OK).
  { id: 'grpc', title: 'gRPC unary, 100 B', kind: 'grpc', method: 'POST', path: GRPC_PATH, expectBytes: SMALL_BODY.length },
  // Route lookup at scale: 1,000 extra VirtualServices (nginx: 1,000 server blocks), the last one hit.
  { id: 'routes1k', title: 'GET 100 B, 1,000 VirtualServices, last one hit', method: 'GET', path: '/', host: routesHost(ROUTES_COUNT - 1), headers: { [ROUTES_HEADER]: 'b' }, expectBytes: SMALL_BODY.length },
  // WebSocket: each connection sends 100 B and waits for the echo, in a loop; req/s = messages/s.
  { id: 'ws', title: 'WebSocket messages, 100 B echo', kind: 'ws', method: 'GET', path: '/ws', expectBytes: WS_MESSAGE.length },
];

function readSettings(): Settings {
  const scenarioIds = envList('BENCH_SCENARIOS');
  const scenarios = scenarioIds ? SCENARIOS.filter((s) => scenarioIds.includes(s.id)) : SCENARIOS;
  if (scenarios.length === 0) {
    throw new Error(`BENCH_SCENARIOS matches none of: ${SCENARIOS.map((s) => s.id).join(', ')}`);
  }
  const targetNames = envList('BENCH_TARGETS');
  for (const t of targetNames ?? []) {
    if (!TARGET_ORDER.includes(t as TargetName)) throw new Error(`BENCH_TARGETS: unknown target ${t}`);
  }
  return {
    rounds: Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 2))),
    duration: Math.max(1, envNumber('BENCH_DURATION', 5)),
    warmup: envNumber('BENCH_WARMUP', 1),
    connections: Math.max(1, Math.round(envNumber('BENCH_CONNECTIONS', 64))),
    scenarios,
    targets: targetNames ? TARGET_ORDER.filter((t) => targetNames.includes(t)) : DEFAULT_TARGETS,
    gatewayCli: path.resolve(REPO, process.env['BENCH_GATEWAY_CLI'] ?? 'dist/cli.js'),
    gatewayArgs: envList('BENCH_GATEWAY_ARGS') ?? [],
    gatewayNodeArgs: envList('BENCH_GATEWAY_NODE_ARGS') ?? [],
    workers: Math.max(1, Math.round(envNumber('BENCH_WORKERS', 1))),
    client: process.env['BENCH_CLIENT'] === 'autocannon' ? 'autocannon' : 'wrk',
    grpcClient: process.env['BENCH_GRPC_CLIENT'] === 'grpc-js' ? 'grpc-js' : 'h2load',
    readyTimeoutMs: envNumber('BENCH_READY_TIMEOUT', 30) * 1000,
    keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  };
}

async function main(): Promise<void> {
  const s = readSettings();
  const notes: string[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-bench-'));
  let ok = false;

  const interrupt = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: stopping children\n`);
    running.current?.stop();
    void stopAll().finally(() => {
      if (!s.keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  try {
    if (s.targets.includes('nginx')) ensureDebianPackage('nginx', 'nginx', notes);
    if (s.client === 'wrk' && s.scenarios.some((sc) => (sc.kind ?? 'http') === 'http') && !ensureDebianPackage('wrk', 'wrk', notes)) {
      notes.push('wrk: missing and not installable here; the HTTP scenarios ran on autocannon.');
      s.client = 'autocannon';
    }
    const needsH2load = s.scenarios.some((sc) => sc.kind === 'h2' || (sc.kind === 'grpc' && s.grpcClient === 'h2load'));
    if (needsH2load && !ensureDebianPackage('h2load', 'nghttp2-client', notes)) {
      if (s.scenarios.some((sc) => sc.kind === 'h2')) throw new Error('h2load: missing and not installable here (apt-get install nghttp2-client), needed by the h2 scenario');
      notes.push('h2load: missing and not installable here; the grpc scenario ran on the grpc-js loop.');
      s.grpcClient = 'grpc-js';
    }
    const cert = s.scenarios.some((sc) => sc.kind === 'https' || sc.kind === 'h2') ? makeCert(tmp) : undefined;
    const up = await startUpstream(cert);
    const tracingPercent = process.env['BENCH_TRACING'];
    const receiver = tracingPercent !== undefined && tracingPercent !== '' ? await startTraceReceiver() : null;
    if (receiver) s.tracing = { percent: Number(tracingPercent), port: receiver.port };
    const targets: Target[] = [];
    let nginxVersion: string | undefined;
    for (const name of s.targets) {
      if (name === 'direct') targets.push(directTarget(up));
      else if (name === 'gateway') targets.push(await startGateway(s, tmp, up, cert));
      else if (name === 'bare') targets.push(await startBare(tmp, up, s.readyTimeoutMs));
      else {
        const n = await startNginx(tmp, up, cert, notes, { routes: s.scenarios.some((sc) => sc.id === 'routes1k') ? ROUTES_COUNT : 0, workerConnections: 1024, name: 'nginx', workers: s.workers });
        if (n) {
          targets.push(n.target);
          nginxVersion = n.version;
        }
      }
    }
    for (const t of targets) for (const sc of s.scenarios) if (servesScenario(t, sc)) await sanityCheck(t, sc, notes);

    const header = reportHeader(s, targets, nginxVersion);
    process.stdout.write(header.join('\n') + '\n\n');

    // Per scenario: a warm-up per target, then the rounds, interleaved direct → gateway → nginx.
    const rows: Row[] = [];
    for (const sc of s.scenarios) {
      const serving = targets.filter((t) => servesScenario(t, sc));
      for (const t of serving) {
        if (s.warmup > 0) await load(s, t, sc, s.warmup);
        rows.push({ scenario: sc, target: t.name, samples: [] });
      }
      for (let round = 1; round <= s.rounds; round++) {
        for (const t of serving) {
          const sample = await load(s, t, sc, s.duration);
          const row = rows.find((r) => r.scenario === sc && r.target === t.name) as Row;
          row.samples.push(sample);
          process.stdout.write(roundLine(s, sc, round, t, sample));
          if (sample.errorDetail) notes.push(`${sc.id} round ${round} ${t.name}: ${sample.errorDetail}.`);
          await sleep(200);
        }
      }
      for (const t of serving) {
        const row = rows.find((r) => r.scenario === sc && r.target === t.name) as Row;
        if (t.child) row.peakRss = peakRssMiB(t.child.pid);
      }
    }

    if (s.scenarios.some((sc) => sc.method === 'POST' && (sc.kind ?? 'http') === 'http')) {
      const st = await upstreamStats(up.child);
      if (st && (st.badPosts > 0 || st.postBytes !== st.postCount * POST_SIZE)) {
        notes.push(`upstream: ${st.badPosts} of ${st.postCount} POST bodies had the wrong length (${st.postBytes} B in all).`);
      } else if (st) {
        notes.push(`upstream: all ${st.postCount} POST bodies arrived whole (${POST_SIZE} B each).`);
      }
    }

    if (receiver) notes.push(`tracing: ${s.tracing!.percent}% sampled, ${receiver.spans} spans received by the Zipkin receiver (BENCH_TRACING).`);
    const figures: Figures = {};
    const extra = process.env['BENCH_EXTRA'] !== '0' ? await extras(s, targets, up, cert, tmp, notes, figures) : '';
    // BENCH_SCALING=1: the scenarios again on 1 and 2 workers of each kind (after the targets above are stopped).
    let scaled = '';
    if (process.env['BENCH_SCALING'] === '1') {
      for (const t of targets) if (t.child) await stopChild(t.child);
      scaled = (await scaling(s, up, cert, tmp, notes)).join('\n') + '\n';
    }
    const md = report(s, rows, header, notes) + (extra ? '\n' + extra : '') + scaled + (s.targets.includes('gateway') ? targetsReport(s, rows, figures) : '');
    process.stdout.write('\n' + md.split('\n').slice(header.length + 1).join('\n'));
    writeResults(s, rows, md);
    ok = true;
  } finally {
    await stopAll();
    if (ok && !s.keepTmp) fs.rmSync(tmp, { recursive: true, force: true });
    else process.stderr.write(`temp dir kept (configs, logs): ${tmp}\n`);
  }
}

// `--upstream`: the upstream child, as before bench/upstream-main.ts existed.
if (process.argv.includes('--upstream')) {
  serveUpstream();
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
