// gRPC unary load from grpc-js clients (autocannon and wrk cannot speak gRPC).
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { tail } from '../proc.js';
import type { Sample, Scenario, Settings, Target } from '../types.js';
import { GRPC_CHANNELS, GRPC_HOST, GRPC_MAX_INFLIGHT, GRPC_PATH, GRPC_REQUEST, raw } from '../wire.js';
import { closeSample, endWindow, Latencies, running, startWindow, stopFlag } from './measure.js';

function grpcClient(port: number): grpc.Client {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1, // a connection of its own, not shared with the other clients
    'grpc.default_authority': GRPC_HOST,
  });
}

/**
 * One unary call. No per-call deadline: grpc-js arms a timer per deadline, which cost ~30% of the
 * client's throughput here; loadGrpc cancels calls still open 10 s after the window instead.
 */
function grpcCall(client: grpc.Client, cb: (err: grpc.ServiceError | null, value?: Buffer) => void): grpc.ClientUnaryCall {
  return client.makeUnaryRequest(GRPC_PATH, raw, raw, GRPC_REQUEST, new grpc.Metadata(), {}, cb);
}

/**
 * gRPC unary load: GRPC_CHANNELS clients (one HTTP/2 connection each) with min(connections,
 * GRPC_MAX_INFLIGHT) calls in flight in all, each starting the next call when it completes, until
 * the duration is over. Measured like load(): latency of OK calls, CPU of the target tree, client
 * CPU of this process.
 */
export async function loadGrpc(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const inflight = Math.min(s.connections, GRPC_MAX_INFLIGHT);
  const clients = Array.from({ length: Math.min(GRPC_CHANNELS, inflight) }, () => grpcClient(target.grpcPort));
  try {
    // Connect first (autocannon's connects are in its window too, but cheap; an h2 setup is not).
    await Promise.all(
      clients.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())))),
    );
    const lat = new Latencies();
    let ok = 0;
    let failed = 0;
    const byStatus = new Map<string, number>();
    const w = startWindow(target);
    const endAt = performance.now() + seconds * 1000;
    const flag = stopFlag();
    const open = new Set<grpc.ClientUnaryCall>();
    // Like autocannon's 10 s timeout: calls still open 10 s after the window are cancelled.
    const guard = setTimeout(() => {
      for (const call of open) call.cancel();
    }, (seconds + 10) * 1000);
    await new Promise<void>((resolve) => {
      let running = inflight;
      const next = (client: grpc.Client): void => {
        if (flag.stopped || performance.now() >= endAt) {
          if (--running === 0) resolve();
          return;
        }
        const start = performance.now();
        const call = grpcCall(client, (err, value) => {
          open.delete(call);
          if (!err && value?.length === sc.expectBytes) {
            ok++;
            lat.add(performance.now() - start);
          } else {
            failed++;
            const key = err ? `${grpc.status[err.code] ?? err.code}: ${err.details}` : `OK with ${value?.length ?? 0} B`;
            byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
          }
          next(client);
        });
        open.add(call);
      };
      for (let i = 0; i < inflight; i++) next(clients[i % clients.length] as grpc.Client);
    });
    clearTimeout(guard);
    running.current = undefined;
    const { wall, clientCpuPct } = endWindow(w);
    const reqs = ok + failed;
    const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
    const sample: Sample = {
      reqs,
      rps: ok / wall,
      p50,
      p99,
      non2xx: 0,
      errors: failed,
      clientCpuPct,
      ...(byStatus.size ? { errorDetail: [...byStatus].map(([k, n]) => `${n}× ${k}`).join('; ') } : {}),
    };
    return closeSample(sample, target, sc, w.cpuBefore, reqs);
  } finally {
    running.current = undefined;
    for (const c of clients) c.close();
  }
}

/** One call before measuring: OK with the expected length, else a clear error with the target's log. */
export async function checkGrpc(target: Target, sc: Scenario): Promise<void> {
  const client = grpcClient(target.grpcPort);
  try {
    const value = await new Promise<Buffer | undefined>((resolve, reject) => {
      const call = grpcCall(client, (err, v) => {
        clearTimeout(t);
        if (err) reject(err);
        else resolve(v);
      });
      const t = setTimeout(() => call.cancel(), 5000);
    });
    if (value?.length !== sc.expectBytes) throw new Error(`answered OK with ${value?.length ?? 0} B`);
  } catch (err) {
    throw new Error(
      `${target.name}: gRPC ${GRPC_PATH} (authority ${GRPC_HOST}) on 127.0.0.1:${target.grpcPort} failed, expected OK with ${sc.expectBytes} B: ${(err as Error).message}` +
        (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
    );
  } finally {
    client.close();
  }
}
