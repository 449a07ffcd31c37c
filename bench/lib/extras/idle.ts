// Extra (a): 10,000 idle keep-alive connections held open on a target; its RSS before, with them
// and after closing them.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fmt, sleep } from '../common.js';
import { alive, nofile, raiseNofile, rssMiB, tail } from '../proc.js';
import type { Figures, Target } from '../types.js';
import { HOST } from '../wire.js';

export const IDLE_CONNECTIONS = 10_000; // extra (a): idle keep-alive connections held open
export const IDLE_BATCH = 500;

/**
 * Opens `count` keep-alive connections (batches of IDLE_BATCH), each sending one GET / and
 * reading its whole answer, then keeping the socket. Returns the sockets whose request got a 200.
 */
async function openIdle(port: number, count: number): Promise<{ sockets: net.Socket[]; failed: number; ms: number }> {
  const sockets: net.Socket[] = [];
  let failed = 0;
  const t0 = performance.now();
  const one = (): Promise<net.Socket | undefined> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      let buf = Buffer.alloc(0);
      const fail = (): void => {
        sock.destroy();
        resolve(undefined);
      };
      sock.setTimeout(10_000, fail);
      sock.once('error', fail);
      sock.once('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      const onData = (chunk: Buffer): void => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? '0');
        if (buf.length < end + 4 + len) return;
        sock.off('data', onData);
        sock.setTimeout(0);
        sock.removeAllListeners('error');
        sock.on('error', () => {}); // a reset while idle is counted by the caller (destroyed)
        if (!head.startsWith('HTTP/1.1 200')) return fail();
        resolve(sock);
      };
      sock.on('data', onData);
    });
  for (let i = 0; i < count; i += IDLE_BATCH) {
    const batch = await Promise.all(Array.from({ length: Math.min(IDLE_BATCH, count - i) }, one));
    for (const x of batch) {
      if (x) sockets.push(x);
      else failed++;
    }
  }
  return { sockets, failed, ms: performance.now() - t0 };
}

async function closeIdle(sockets: net.Socket[]): Promise<void> {
  for (const x of sockets) x.destroy();
  await sleep(500);
}

export async function idleConnections(t: Target, lines: string[], figures: Figures): Promise<void> {
  const pid = t.child?.pid;
  if (pid === undefined) return;
  // Each idle connection holds one fd here and one in the target (the gateway: plus none upstream).
  const own = raiseNofile(process.pid, IDLE_CONNECTIONS + 1000);
  const theirs = raiseNofile(pid, IDLE_CONNECTIONS + 1000);
  const cap = Math.min(nofile('self').soft, nofile(pid).soft) - 1000;
  const count = Math.max(0, Math.min(IDLE_CONNECTIONS, cap));
  if (count < IDLE_CONNECTIONS) lines.push(`- ${t.name}: open-files limit (bench ${own}, ${t.name} ${theirs}) caps the idle connections at ${count}.`);
  await sleep(1000);
  const before = rssMiB(pid);
  const { sockets, failed, ms } = await openIdle(t.port, count);
  await sleep(1000);
  const open = sockets.filter((x) => !x.destroyed && x.readyState === 'open').length;
  const during = rssMiB(pid);
  await closeIdle(sockets);
  await sleep(1000);
  const after = rssMiB(pid);
  const per = open > 0 ? ((during - before) * 1024 * 1024) / open : NaN;
  if (t.name === 'gateway') {
    if (t.child?.name === 'gateway') figures.idleLoaded = { rss: during, open };
    else figures.idle = { rss: during, open };
  }
  lines.push(
    `| ${t.name === 'gateway' ? (t.child?.name === 'gateway' ? 'gateway, after the scenarios' : 'gateway, fresh') : t.name} | ${fmt(count)} | ${fmt(ms / 1000, 1)} | ${failed} | ${fmt(open)} | ${fmt(before, 1)} | ${fmt(during, 1)} | ${fmt(after, 1)} | ${fmt(per / 1024, 1)} |`,
  );
  if (t.child && !alive(t.child)) throw new Error(`${t.child.name} died holding idle connections\n${tail(t.child.logFile)}`);
}
