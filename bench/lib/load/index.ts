// The load generators, one file each, and which one a scenario runs on: `kind` h2 → h2load.ts,
// grpc → h2load.ts (grpc.ts with BENCH_GRPC_CLIENT=grpc-js or without h2load),
// ws → ws.ts, https → autocannon.ts, http → wrk.ts (autocannon.ts with BENCH_CLIENT=autocannon or
// without wrk). A new generator is a file exporting `load…(s, target, sc, seconds): Promise<Sample>`
// (measure.ts: Latencies, running, closeSample) and a `check…(target, sc)`, and a line in each
// function below.
import { request } from '../net.js';
import { tail } from '../proc.js';
import { scHost, type Sample, type Scenario, type Settings, type Target } from '../types.js';
import { HOST } from '../wire.js';
import { loadAutocannon } from './autocannon.js';
import { checkGrpc, loadGrpc } from './grpc.js';
import { checkH2, loadH2load } from './h2load.js';
import { portFor } from './measure.js';
import { loadWrk } from './wrk.js';
import { checkWs, loadWs } from './ws.js';

export { running } from './measure.js';

/** One measured window of `seconds` of scenario `sc` against `target`. */
export async function load(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  if (sc.kind === 'h2' || (sc.kind === 'grpc' && s.grpcClient === 'h2load')) return loadH2load(s, target, sc, seconds);
  if (sc.kind === 'grpc') return loadGrpc(s, target, sc, seconds);
  if (sc.kind === 'ws') return loadWs(s, target, sc, seconds);
  // wrk cannot set the TLS server name apart from the URL's host: HTTPS stays on autocannon.
  if (s.client === 'wrk' && sc.kind !== 'https') return loadWrk(s, target, sc, seconds);
  return loadAutocannon(s, target, sc, seconds);
}

/**
 * One request (gRPC call, WebSocket echo) per target and scenario before measuring: status 200
 * (gRPC: OK) and the expected body length, else an error naming the target, with its log's tail.
 * HTTPS: notes which protocol and cipher the target negotiated.
 */
export async function sanityCheck(target: Target, sc: Scenario, notes: string[]): Promise<void> {
  if (sc.kind === 'grpc') return checkGrpc(target, sc);
  if (sc.kind === 'h2') return checkH2(target, sc, notes);
  if (sc.kind === 'ws') return checkWs(target, sc);
  const r = await request(portFor(target, sc), sc.method, sc.path, sc.body, scHost(sc), sc.kind === 'https', sc.headers);
  if (r.tls) notes.push(`${sc.id}: ${target.name} negotiated ${r.tls} (SNI ${HOST}).`);
  if (r.status !== 200 || r.body.length !== sc.expectBytes) {
    const detail = r.body.subarray(0, 200).toString('utf8').replace(/\s+/g, ' ');
    throw new Error(
      `${target.name}: ${sc.method} ${sc.path} (Host: ${scHost(sc)}) answered ${r.status} with ${r.body.length} B, expected 200 with ${sc.expectBytes} B: ${detail}` +
        (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
    );
  }
}
