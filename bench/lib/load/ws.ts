// WebSocket echo load with the `ws` client.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { tail } from '../proc.js';
import { scHost, type Sample, type Scenario, type Settings, type Target } from '../types.js';
import { HOST, WS_MESSAGE } from '../wire.js';
import { closeSample, endWindow, Latencies, running, startWindow, stopFlag } from './measure.js';

/** One WebSocket client connection (no compression), open. */
export function wsConnect(port: number, sc: Scenario): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${sc.path}`, { headers: { host: scHost(sc) }, perMessageDeflate: false, handshakeTimeout: 5000 });
    ws.binaryType = 'nodebuffer';
    const onError = (err: Error): void => {
      ws.terminate();
      reject(err);
    };
    ws.once('error', onError);
    ws.once('unexpected-response', (_req, res) => onError(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    ws.once('open', () => {
      ws.off('error', onError);
      resolve(ws);
    });
  });
}

/**
 * WebSocket echo load: `connections` sockets (opened before the window), each sending a 100 B
 * binary message and waiting for its echo, in a loop, for the duration. req/s = echoed messages/s,
 * latency per message, CPU of the target tree per message. errors = wrong echoes, socket errors
 * and sockets closed during the window.
 */
export async function loadWs(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const sockets: WebSocket[] = [];
  try {
    for (let i = 0; i < s.connections; i += 16) {
      const batch = await Promise.all(Array.from({ length: Math.min(16, s.connections - i) }, () => wsConnect(target.port, sc)));
      sockets.push(...batch);
    }
    const lat = new Latencies();
    let msgs = 0;
    let errors = 0;
    const details = new Map<string, number>();
    const problem = (key: string): void => {
      errors++;
      details.set(key, (details.get(key) ?? 0) + 1);
    };
    const w = startWindow(target);
    const endAt = performance.now() + seconds * 1000;
    const flag = stopFlag();
    await new Promise<void>((resolve) => {
      let running = sockets.length;
      const done = (): void => {
        if (--running === 0) resolve();
      };
      for (const ws of sockets) {
        let sentAt = 0;
        let finished = false;
        const finish = (): void => {
          if (finished) return;
          finished = true;
          done();
        };
        const send = (): void => {
          if (flag.stopped || performance.now() >= endAt) return finish();
          sentAt = performance.now();
          ws.send(WS_MESSAGE);
        };
        ws.on('message', (data: Buffer) => {
          if (data.length === sc.expectBytes) {
            msgs++;
            lat.add(performance.now() - sentAt);
          } else problem(`echo of ${data.length} B`);
          send();
        });
        ws.on('error', (err) => problem(`error: ${err.message}`));
        ws.on('close', (code) => {
          if (!finished) problem(`closed (${code})`);
          finish();
        });
        send();
      }
      // A socket that never gets its echo must not hang the bench: give up 10 s after the window.
      setTimeout(() => {
        for (const ws of sockets) ws.terminate();
      }, (seconds + 10) * 1000).unref();
    });
    running.current = undefined;
    const { wall, clientCpuPct } = endWindow(w);
    const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
    const sample: Sample = {
      reqs: msgs,
      rps: msgs / wall,
      p50,
      p99,
      non2xx: 0,
      errors,
      clientCpuPct,
      ...(details.size ? { errorDetail: [...details].map(([k, n]) => `${n}× ${k}`).join('; ') } : {}),
    };
    return closeSample(sample, target, sc, w.cpuBefore, msgs);
  } finally {
    running.current = undefined;
    for (const ws of sockets) {
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.close();
      setTimeout(() => ws.terminate(), 2000).unref();
    }
  }
}

/** One echo before measuring: the expected length, else a clear error with the target's log. */
export async function checkWs(target: Target, sc: Scenario): Promise<void> {
  try {
    const ws = await wsConnect(target.port, sc);
    const echo = await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no echo after 5 s')), 5000);
      ws.once('message', (data: Buffer) => {
        clearTimeout(t);
        resolve(data);
      });
      ws.send(WS_MESSAGE);
    });
    ws.terminate();
    if (echo.length !== sc.expectBytes) throw new Error(`echo of ${echo.length} B`);
  } catch (err) {
    throw new Error(
      `${target.name}: WebSocket ${sc.path} (Host: ${HOST}) on 127.0.0.1:${target.port} failed, expected a ${sc.expectBytes} B echo: ${(err as Error).message}` +
        (target.child?.logFile ? `\n${tail(target.child.logFile)}` : ''),
    );
  }
}
