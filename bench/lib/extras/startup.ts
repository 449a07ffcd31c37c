// Extra: the idle RSS of a fresh gateway on the bundled config (config/demo.yaml, as `npm start`
// and a first-time user run it), one worker, every port at its default role (the HTTP port, the
// admin port, the xDS port; ports moved to free ones). Three fresh starts, the median. The mesh
// root is made beforehand (`gatehouse ca root`) in the run's own state dir: a gateway's first
// start ever also generates the root, which loads the certificate builder (~10 MB) for its life.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, fmt, sleep } from '../common.js';
import { freePorts, waitReady } from '../net.js';
import { rssMiB, stopChild, track } from '../proc.js';
import type { Figures, Settings } from '../types.js';

export const STARTUP_RUNS = 3;
/** VmRSS is read this long after the gateway is ready (the "after 6 s" from the start). */
export const STARTUP_SETTLE_MS = 5_000;

export async function startupRss(s: Settings, tmp: string, lines: string[], figures: Figures): Promise<void> {
  const stateDir = path.join(tmp, 'startup-state');
  const env = { ...process.env, GATEHOUSE_STATE_DIR: stateDir };
  const root = spawnSync(process.execPath, [s.gatewayCli, 'ca', 'root'], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (root.status !== 0) throw new Error(`gatehouse ca root failed: ${root.stderr}`);
  const samples: number[] = [];
  for (let i = 0; i < STARTUP_RUNS; i++) {
    const [http, admin, xds] = await freePorts(3);
    const configDir = path.join(tmp, `startup-config-${i}`);
    fs.mkdirSync(configDir);
    const text = fs.readFileSync(path.join(REPO, 'config', 'demo.yaml'), 'utf8').replace(/number: 8080\b/, `number: ${http}`);
    fs.writeFileSync(path.join(configDir, 'demo.yaml'), text);
    const logFile = path.join(tmp, `startup-${i}.log`);
    const log = fs.openSync(logFile, 'a');
    const args = [s.gatewayCli, 'run', '--config', configDir, '--workers', '1', '--bind', '127.0.0.1', '--admin-port', String(admin), '--xds-port', String(xds)];
    const proc = spawn(process.execPath, args, { cwd: REPO, env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const child = track(`gateway-startup-${i}`, proc, logFile);
    try {
      await waitReady(child, admin!, '/healthz/ready', '127.0.0.1', s.readyTimeoutMs);
      await sleep(STARTUP_SETTLE_MS);
      samples.push(rssMiB(child.pid));
    } finally {
      await stopChild(child);
    }
  }
  samples.sort((a, b) => a - b);
  const median = samples[Math.floor(samples.length / 2)]!;
  figures.startup = { rss: median, samples };
  lines.push(
    `| bundled config, one worker | ${samples.map((x) => fmt(x, 1)).join(' / ')} | ${fmt(median, 1)} | ${fmt(median * 1.048576, 1)} |`,
  );
}
