// Target `bare`: PERFORMANCE.md's bare uWS + undici proxy (bare-proxy.mjs), the reference of issue
// 18's body-path target: what two libraries cost with no routing, policy, metrics or logs. It
// serves the plain HTTP/1.1 scenarios only (the others skip it).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from '../common.js';
import { freePorts, waitReady } from '../net.js';
import { track } from '../proc.js';
import type { Scenario, Target } from '../types.js';
import type { Upstream } from '../upstream.js';
import { HOST } from '../wire.js';

export async function startBare(tmp: string, up: Upstream, readyTimeoutMs: number): Promise<Target> {
  const [port] = await freePorts(1);
  const logFile = path.join(tmp, 'bare.log');
  const log = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, [path.join(REPO, 'bench', 'lib', 'targets', 'bare-proxy.mjs'), String(port), String(up.port)], { cwd: REPO, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track('bare', proc, logFile);
  await waitReady(child, port!, '/', HOST, readyTimeoutMs);
  // No gRPC port: the grpc scenario skips this target (servesScenario).
  return { name: 'bare', port: port!, grpcPort: 0, child };
}

/** Whether a target takes part in a scenario: `bare` serves plain HTTP/1.1 through uWS only. */
export function servesScenario(t: Target, sc: Scenario): boolean {
  return t.name !== 'bare' || ((sc.kind ?? 'http') === 'http' && !sc.strict);
}
