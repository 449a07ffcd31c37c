// Extra: the idle RSS of a fresh gateway on the bundled config (config/demo.yaml, as `npm start`
// and a first-time user run it), one worker, every port at its default role (the HTTP port, the
// admin port, the xDS port; ports moved to free ones). Three fresh starts, the median. The mesh
// root is made beforehand (`gatehouse ca root`) in the run's own state dir: a gateway's first
// start ever also generates the root, which loads the certificate builder (~10 MB) for its life.
// Then the same with 1,000 more VirtualServices: the RSS a configuration of that size holds.
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

/** VirtualServices for the RSS-per-1,000 row: each binds the bundled Gateway, two header-matched routes to productpage. */
export const STARTUP_EXTRA_VS = 1000;

function demoVirtualServices(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: extra-${i}, namespace: default }
spec:
  hosts: ['vs-${i}.demo.local']
  gateways: [demo-gateway]
  http:
    - match: [{ headers: { x-variant: { exact: a } } }]
      route: [{ destination: { host: productpage, subset: v1 } }]
    - match: [{ headers: { x-variant: { exact: b } } }]
      route: [{ destination: { host: productpage, subset: v2 } }]
`);
  }
  return out.join('');
}

/**
 * Idle RSS of fresh gateways on the bundled config, and on the same with 1,000 more
 * VirtualServices (what a configuration of that size holds), STARTUP_RUNS starts each.
 */
export async function startupRss(s: Settings, tmp: string, lines: string[], figures: Figures): Promise<void> {
  const stateDir = path.join(tmp, 'startup-state');
  const env = { ...process.env, GATEHOUSE_STATE_DIR: stateDir };
  const root = spawnSync(process.execPath, [s.gatewayCli, 'ca', 'root'], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (root.status !== 0) throw new Error(`gatehouse ca root failed: ${root.stderr}`);
  const plain = await startups(s, tmp, env, 'startup', '');
  figures.startup = { rss: plain.median, samples: plain.samples };
  lines.push(`| bundled config, one worker | ${plain.samples.map((x) => fmt(x, 1)).join(' / ')} | ${fmt(plain.median, 1)} | ${fmt(plain.median * 1.048576, 1)} |`);
  const big = await startups(s, tmp, env, 'startup-vs', demoVirtualServices(STARTUP_EXTRA_VS));
  lines.push(
    `| the same + ${fmt(STARTUP_EXTRA_VS)} VirtualServices (2 routes each): ${fmt(big.median - plain.median, 1)} MiB more per ${fmt(STARTUP_EXTRA_VS)} | ${big.samples.map((x) => fmt(x, 1)).join(' / ')} | ${fmt(big.median, 1)} | ${fmt(big.median * 1.048576, 1)} |`,
  );
}

async function startups(s: Settings, tmp: string, env: NodeJS.ProcessEnv, name: string, extraYaml: string): Promise<{ median: number; samples: number[] }> {
  const samples: number[] = [];
  for (let i = 0; i < STARTUP_RUNS; i++) {
    const [http, admin, xds] = await freePorts(3);
    const configDir = path.join(tmp, `${name}-config-${i}`);
    fs.mkdirSync(configDir);
    const text = fs.readFileSync(path.join(REPO, 'config', 'demo.yaml'), 'utf8').replace(/number: 8080\b/, `number: ${http}`);
    fs.writeFileSync(path.join(configDir, 'demo.yaml'), text);
    if (extraYaml) fs.writeFileSync(path.join(configDir, 'extra.yaml'), extraYaml);
    const logFile = path.join(tmp, `${name}-${i}.log`);
    const log = fs.openSync(logFile, 'a');
    const args = [s.gatewayCli, 'run', '--config', configDir, '--workers', '1', '--bind', '127.0.0.1', '--admin-port', String(admin), '--xds-port', String(xds)];
    const proc = spawn(process.execPath, args, { cwd: REPO, env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const child = track(`gateway-${name}-${i}`, proc, logFile);
    try {
      await waitReady(child, admin!, '/healthz/ready', '127.0.0.1', s.readyTimeoutMs);
      await sleep(STARTUP_SETTLE_MS);
      samples.push(rssMiB(child.pid));
    } finally {
      await stopChild(child);
    }
  }
  samples.sort((a, b) => a - b);
  return { median: samples[Math.floor(samples.length / 2)]!, samples };
}
