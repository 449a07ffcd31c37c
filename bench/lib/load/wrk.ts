// wrk (C, one thread): the plain-HTTP load generator by default.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cpuSnapshot, findOnPath } from '../proc.js';
import { scHost, type Sample, type Scenario, type Settings, type Target } from '../types.js';
import { closeSample, portFor, runLoadTool } from './measure.js';

/**
 * Plain-HTTP load with wrk (one thread, `s.connections` connections, keep-alive): about a third of
 * autocannon's CPU per request, so the client takes less of the 2 cores the targets need. Latency
 * percentiles are wrk's (all responses; it prints p50 and p99 with --latency); client CPU is read
 * from /proc while it runs.
 */
export async function loadWrk(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const bin = findOnPath('wrk');
  if (!bin) throw new Error('wrk: not on PATH (BENCH_CLIENT=autocannon uses autocannon instead)');
  const pid = target.child?.pid;
  const cpuBefore = pid !== undefined ? cpuSnapshot(pid) : undefined;
  const args = ['-t1', `-c${s.connections}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-H', `Host: ${scHost(sc)}`];
  for (const [k, v] of Object.entries(sc.headers ?? {})) args.push('-H', `${k}: ${v}`);
  if (sc.body) {
    // The body as a Lua long string of one repeated byte (the bench's bodies are).
    const byte = String.fromCharCode(sc.body[0] ?? 0x70);
    const script = path.join(os.tmpdir(), `gatehouse-bench-wrk-${process.pid}-${sc.id}.lua`);
    fs.writeFileSync(script, `wrk.method = "${sc.method}"\nwrk.headers["Content-Type"] = "application/octet-stream"\nwrk.body = string.rep("${byte}", ${sc.body.length})\n`);
    args.push('-s', script);
  }
  args.push(`http://127.0.0.1:${portFor(target, sc)}${sc.path}`);
  const { out, code, wall, clientSec } = await runLoadTool(bin, args);
  if (code !== 0) throw new Error(`wrk exited ${code}: ${out.trim().slice(-500)}`);
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    return m ? Number(m[1]) : 0;
  };
  const ms = (re: RegExp): number => {
    const m = re.exec(out);
    if (!m) return NaN;
    const unit = m[2];
    const x = Number(m[1]);
    return unit === 'us' ? x / 1000 : unit === 's' ? x * 1000 : unit === 'm' ? x * 60_000 : x;
  };
  const reqs = num(/(\d+) requests in/);
  const duration = (() => {
    const m = /requests in ([\d.]+)(ms|s|m)/.exec(out);
    if (!m) return seconds;
    const x = Number(m[1]);
    return m[2] === 'ms' ? x / 1000 : m[2] === 'm' ? x * 60 : x;
  })();
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const sample: Sample = {
    reqs,
    rps: reqs / duration,
    p50: ms(/^\s+50%\s+([\d.]+)(us|ms|s|m)$/m),
    p99: ms(/^\s+99%\s+([\d.]+)(us|ms|s|m)$/m),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    errors: sockErr ? sockErr.slice(1).reduce((a, x) => a + Number(x), 0) : 0,
    clientCpuPct: (clientSec / wall) * 100,
  };
  return closeSample(sample, target, sc, cpuBefore, reqs);
}
