// What every load generator shares: a latency buffer, the run in progress (for ^C), the target
// port a scenario uses, and closing a sample (the target's CPU per request, a dead target).
import { spawn } from 'node:child_process';
import { alive, CLK_TCK, cpuDelta, cpuSnapshot, readStat, tail } from '../proc.js';
import type { Sample, Scenario, Target } from '../types.js';

/** 2xx latencies in ms at autocannon's float precision (its own histogram rounds to whole ms). */
export class Latencies {
  private buf = new Float64Array(1 << 16);
  private n = 0;
  add(ms: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = ms;
  }
  percentiles(ps: number[]): number[] {
    if (this.n === 0) return ps.map(() => NaN);
    const sorted = this.buf.subarray(0, this.n).sort();
    return ps.map((p) => sorted[Math.min(this.n - 1, Math.max(0, Math.ceil((p / 100) * this.n) - 1))] as number);
  }
}

/** The run in progress, stopped on ^C. */
export const running: { current?: { stop(): void } | undefined } = {};

export function portFor(target: Target, sc: Scenario): number {
  if (sc.kind === 'grpc') return target.grpcPort;
  if (sc.kind === 'h2') {
    if (target.h2Port === undefined) throw new Error(`${target.name}: no h2 port`);
    return target.h2Port;
  }
  if (sc.kind === 'https') {
    if (target.tlsPort === undefined) throw new Error(`${target.name}: no HTTPS port`);
    return target.tlsPort;
  }
  return sc.strict ? (target.strictPort ?? target.port) : target.port;
}

/** The stop flag of a loop generator (grpc, ws), registered as the run in progress: ^C sets it. */
export function stopFlag(): { stopped: boolean } {
  const flag = { stopped: false };
  running.current = {
    stop: () => {
      flag.stopped = true;
    },
  };
  return flag;
}

/** The start of a measured window: the target tree's CPU, this process's CPU, the wall clock. */
export interface Window {
  cpuBefore: Map<number, number> | undefined;
  clientBefore: NodeJS.CpuUsage;
  t0: bigint;
}

export function startWindow(target: Target): Window {
  const pid = target.child?.pid;
  const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
  const clientBefore = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  return { cpuBefore, clientBefore, t0 };
}

/** Seconds since the window started, and this process's CPU over them (100 = one core). */
export function endWindow(w: Window): { wall: number; clientCpuPct: number } {
  const wall = Number(process.hrtime.bigint() - w.t0) / 1e9;
  const client = process.cpuUsage(w.clientBefore);
  return { wall, clientCpuPct: ((client.user + client.system) / 1e6 / wall) * 100 };
}

/**
 * Ends a measurement: the target tree's CPU per request (`count` responses) since `cpuBefore`,
 * and a clear error if the target died during the scenario.
 */
export function closeSample(sample: Sample, target: Target, sc: Scenario, cpuBefore: Map<number, number> | undefined, count: number): Sample {
  const pid = target.child?.pid;
  if (pid !== undefined && cpuBefore && count > 0) {
    const after = cpuSnapshot(pid);
    const total = cpuDelta(cpuBefore, after);
    sample.cpuUsPerReq = (total * 1e6) / count;
    // Several processes (the gateway's worker processes, nginx's master and workers): each one's share.
    if (after.size > 1 && total > 0) sample.cpuSplit = [...after].map(([p, t]) => Math.round(((t - (cpuBefore.get(p) ?? 0)) / total) * 100));
  }
  if (target.child && !alive(target.child)) throw new Error(`${target.child.name} died during ${sc.title}\n${tail(target.child.logFile)}`);
  return sample;
}

/**
 * Runs an external load generator (wrk, h2load) to its end: its output (stdout and stderr), exit
 * code, wall time and its own CPU seconds, read from /proc while it runs (its entry goes with it).
 * `running` can stop it (SIGINT) meanwhile.
 */
export async function runLoadTool(bin: string, args: readonly string[]): Promise<{ out: string; code: number | null; wall: number; clientSec: number }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.current = { stop: () => child.kill('SIGINT') };
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  let clientSec = 0;
  const poll = setInterval(() => {
    const st = child.pid !== undefined ? readStat(child.pid) : undefined;
    if (st) clientSec = st.ticks / CLK_TCK;
  }, 100);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearInterval(poll);
  running.current = undefined;
  return { out, code, wall: Number(process.hrtime.bigint() - t0) / 1e9, clientSec };
}
