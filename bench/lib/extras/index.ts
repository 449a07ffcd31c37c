// The extra measurements, once after the scenarios (BENCH_EXTRA=0 skips them): idle keep-alive
// connections (idle.ts) on the gateway that ran the scenarios, a fresh gateway and a second nginx;
// the config swap under load (swap.ts). Markdown for the report; what the targets table needs
// goes into `figures`.
import { fmt } from '../common.js';
import { stopChild } from '../proc.js';
import { startGateway } from '../targets/gateway.js';
import { startNginx } from '../targets/nginx.js';
import type { CertPaths, Figures, Settings, Target } from '../types.js';
import type { Upstream } from '../upstream.js';
import { HOST } from '../wire.js';
import { IDLE_BATCH, IDLE_CONNECTIONS, idleConnections } from './idle.js';
import { STARTUP_EXTRA_VS, STARTUP_RUNS, STARTUP_SETTLE_MS, startupRss } from './startup.js';
import { configSwap } from './swap.js';

export async function extras(s: Settings, targets: Target[], up: Upstream, cert: CertPaths | undefined, tmp: string, notes: string[], figures: Figures): Promise<string> {
  const lines: string[] = ['## Extra measurements', '', '### Idle keep-alive connections', ''];
  lines.push(
    '| target | connections | open s | failed | still open at measurement | RSS MiB before | RSS MiB with them | RSS MiB after close | KiB per connection |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  const gw = targets.find((t) => t.name === 'gateway');
  if (gw) {
    await idleConnections(gw, lines, figures);
    // A second gateway, started now with the base config (no routes1k extras, like nginx-idle):
    // what 10,000 idle connections cost without the heap the scenarios grew (V8 keeps it; gRPC
    // alone takes the RSS to ~300 MiB) or the 1,000 extra VirtualServices (~40 MiB).
    const fresh = await startGateway(s, tmp, up, cert, 'gateway-idle', 0);
    try {
      await idleConnections(fresh, lines, figures);
    } finally {
      if (fresh.child) await stopChild(fresh.child);
    }
  }
  if (targets.some((t) => t.name === 'nginx')) {
    // A separate nginx (same config, worker_connections sized for the idle connections) so the
    // scenario nginx keeps its usual 1,024: its "before" includes the bigger connection table.
    const n = await startNginx(tmp, up, cert, notes, { routes: 0, workerConnections: IDLE_CONNECTIONS + 1024, name: 'nginx-idle', workers: s.workers });
    if (n?.target.child) {
      try {
        await idleConnections(n.target, lines, figures);
      } finally {
        await stopChild(n.target.child);
      }
    }
  }
  lines.push(
    '',
    `Each connection sent one \`GET /\` (Host ${HOST}) and kept its socket; opened in batches of ${IDLE_BATCH}, measured 1 s after the last. RSS = VmRSS of the process tree. ` +
      `nginx here is a second instance with worker_connections ${fmt(IDLE_CONNECTIONS + 1024)} (its "before" includes that connection table).`,
  );
  if (gw) {
    lines.push('', '### Fresh gateway at idle', '', '| config | VmRSS MiB of each start | median MiB | median MB |', '|---|---|---:|---:|');
    await startupRss(s, tmp, lines, figures);
    lines.push('', `\`node dist/cli.js run --config config/ --workers 1\` (its ports moved to free ones; admin and xDS on), ${STARTUP_RUNS} fresh starts of each config, VmRSS ${STARTUP_SETTLE_MS / 1000} s after ready; the mesh root made beforehand; the second row adds ${STARTUP_EXTRA_VS} VirtualServices bound to the bundled Gateway (bench/lib/extras/startup.ts).`);
    lines.push('', '### Config swap under load', '', '| swap | gateway "configuration applied" ms | write → applied seen, s |', '|---|---:|---:|');
    await configSwap(s, gw, lines, figures);
  }
  return lines.join('\n') + '\n';
}
