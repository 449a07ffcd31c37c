// Extra (b): a config swap to 10,000 VirtualServices and back under GET load on the gateway: the
// gateway's logged "configuration applied" ms, p99 inside vs outside the swap windows, the
// longest time without any response.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fmt, ratio, sleep } from '../common.js';
import { ROUTES_SWAP_COUNT, routesYaml } from '../configs.js';
import { runAutocannon } from '../load/autocannon.js';
import { Latencies, running } from '../load/measure.js';
import { alive, tail } from '../proc.js';
import { writeGatewayConfig } from '../targets/gateway.js';
import type { Figures, Settings, Target } from '../types.js';
import { HOST } from '../wire.js';

interface LogEvent {
  msg: string;
  ms?: number;
  at: number; // performance.now() when the bench saw it
}

/** Waits for the gateway to log "configuration applied" (with ms) after byte `offset` of its log. */
async function waitApplied(logFile: string, offset: number, timeoutMs: number): Promise<{ event: LogEvent; offset: number }> {
  const deadline = performance.now() + timeoutMs;
  let pos = offset;
  let rest = '';
  while (performance.now() < deadline) {
    const fd = fs.openSync(logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size > pos) {
        const b = Buffer.alloc(size - pos);
        fs.readSync(fd, b, 0, b.length, pos);
        pos = size;
        const text = rest + b.toString('utf8');
        const parts = text.split('\n');
        rest = parts.pop() ?? '';
        for (const line of parts) {
          let o: { msg?: string; ms?: number };
          try {
            o = JSON.parse(line) as { msg?: string; ms?: number };
          } catch {
            continue;
          }
          if (o.msg === 'configuration applied' && typeof o.ms === 'number') return { event: { msg: o.msg, ms: o.ms, at: performance.now() }, offset: pos };
          if (o.msg && /rejected|could not be resolved/.test(o.msg)) throw new Error(`gateway: ${o.msg}: ${line.slice(0, 300)}`);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    await sleep(20);
  }
  throw new Error(`gateway: no "configuration applied" within ${timeoutMs / 1000} s`);
}

/**
 * Config swap under load: autocannon GETs / (Host bench.local) at the gateway; after 2 s the
 * config file becomes the 10,000-VirtualService one, once applied (+1.5 s) it goes back, and the
 * load stops 2 s after that (at least 8 s in all). Per-response completion times split the
 * latencies into "swap windows" (from the write until 1 s after the gateway logged "configuration
 * applied") and the rest.
 */
export async function configSwap(s: Settings, t: Target, lines: string[], figures: Figures): Promise<void> {
  const cfg = t.config;
  const logFile = t.child?.logFile;
  if (!cfg || !logFile || !t.child) return;
  const big = cfg.base + routesYaml(ROUTES_SWAP_COUNT);
  const times: number[] = [];
  const lats: number[] = [];
  let bad = 0;
  const start = performance.now();
  const inst = runAutocannon({
    url: `http://127.0.0.1:${t.port}/`,
    connections: s.connections,
    duration: 180,
    method: 'GET',
    headers: { host: HOST },
    timeout: 10,
  });
  running.current = inst;
  inst.on('response', (_c, status, _b, ms) => {
    if (status >= 200 && status < 300) {
      times.push(performance.now());
      lats.push(ms);
    } else bad++;
  });
  const windows: { from: number; to: number; ms: number; what: string }[] = [];
  let error: Error | undefined;
  try {
    let offset = fs.statSync(logFile).size;
    await sleep(2000);
    for (const [what, text] of [[`→ ${fmt(ROUTES_SWAP_COUNT)} VirtualServices`, big], ['→ back', cfg.text]] as const) {
      const from = performance.now();
      writeGatewayConfig(cfg.dir, text);
      const r = await waitApplied(logFile, offset, 120_000);
      offset = r.offset;
      windows.push({ from, to: r.event.at + 1000, ms: r.event.ms ?? NaN, what });
      await sleep(1500);
    }
    await sleep(Math.max(2000, start + 8000 - performance.now()));
  } catch (err) {
    error = err as Error;
    writeGatewayConfig(cfg.dir, cfg.text);
  } finally {
    inst.stop();
  }
  const r = await inst;
  running.current = undefined;
  const end = performance.now();
  const inWin = (x: number): boolean => windows.some((w) => x >= w.from && x <= w.to);
  const inside = new Latencies();
  const outside = new Latencies();
  let nIn = 0;
  let nOut = 0;
  let maxIn = 0;
  for (let i = 0; i < times.length; i++) {
    const x = times[i] as number;
    const l = lats[i] as number;
    if (inWin(x)) {
      inside.add(l);
      nIn++;
      maxIn = Math.max(maxIn, l);
    } else {
      outside.add(l);
      nOut++;
    }
  }
  const winSec = windows.reduce((a, w) => a + (Math.min(w.to, end) - w.from) / 1000, 0);
  const outSec = (end - start) / 1000 - winSec;
  // p99 per 1-s bin inside the windows: the worst second.
  let worstBin = 0;
  for (const w of windows) {
    for (let b = w.from; b < w.to; b += 1000) {
      const bin = new Latencies();
      for (let i = 0; i < times.length; i++) if ((times[i] as number) >= b && (times[i] as number) < b + 1000) bin.add(lats[i] as number);
      const [p = NaN] = bin.percentiles([99]);
      if (p > worstBin) worstBin = p;
    }
  }
  // The longest time without any response completing (a stalled event loop shows up here).
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, (times[i] as number) - (times[i - 1] as number));
  const [pIn = NaN] = inside.percentiles([99]);
  const [pOut = NaN] = outside.percentiles([99]);
  if (!error) figures.swap = { gapMs: gap, p99Ratio: pOut > 0 ? pIn / pOut : NaN };
  for (const w of windows) {
    lines.push(`| ${w.what} | ${fmt(w.ms)} | ${fmt((w.to - 1000 - w.from) / 1000, 2)} |`);
  }
  lines.push(
    '',
    `Under ${s.connections} connections of GET 100 B for ${fmt((end - start) / 1000, 1)} s: outside the swap windows ${fmt(nOut / outSec)} req/s, p99 ${fmt(pOut, 2)} ms; ` +
      `inside them (${fmt(winSec, 1)} s: from each write until 1 s after "configuration applied") ${fmt(winSec > 0 ? nIn / winSec : NaN)} req/s, p99 ${fmt(pIn, 2)} ms ` +
      `(${ratio(pIn, pOut)} the outside p99; worst 1-s bin p99 ${fmt(worstBin, 2)} ms, max ${fmt(maxIn, 2)} ms); longest time without any response ${fmt(gap)} ms; non-2xx ${bad}, errors ${r.errors} of which timeouts (no answer in 10 s, not in the latencies) ${r.timeouts}.`,
  );
  if (error) lines.push(`- swap failed: ${error.message.split('\n')[0]}`);
  if (!alive(t.child)) throw new Error(`gateway died during the config swap\n${tail(logFile)}`);
}
