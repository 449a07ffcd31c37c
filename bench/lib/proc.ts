// Processes: the bench's children (tracked by PID, stopped by PID, also on errors and ^C), /proc
// accounting for a process tree (CPU seconds, RSS, open-files limits), and the executables the
// bench runs (wrk, nginx: on PATH, else installed from Debian when running as root).
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

// ---------------------------------------------------------------------------------------------
// Child processes: tracked by PID, stopped by PID.

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  logFile?: string;
}
export const children: Child[] = [];

export function alive(c: Child): boolean {
  return c.proc.exitCode === null && c.proc.signalCode === null;
}

export function track(name: string, proc: ChildProcess, logFile?: string): Child {
  if (proc.pid === undefined) throw new Error(`${name}: failed to start`);
  const child: Child = { name, proc, pid: proc.pid, ...(logFile ? { logFile } : {}) };
  children.push(child);
  proc.on('error', (err) => {
    process.stderr.write(`${name} (pid ${child.pid}): ${err.message}\n`);
  });
  return child;
}

export async function stopChild(c: Child): Promise<void> {
  if (!alive(c)) return;
  const exited = new Promise<void>((resolve) => c.proc.once('exit', () => resolve()));
  try {
    process.kill(c.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const t = setTimeout(() => {
    try {
      if (alive(c)) process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, 3000);
  await exited;
  clearTimeout(t);
}

export async function stopAll(): Promise<void> {
  await Promise.all(children.map(stopChild));
}

process.on('exit', () => {
  for (const c of children) {
    try {
      if (alive(c)) process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export function tail(file: string | undefined, lines = 20): string {
  if (!file) return '';
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------------
// /proc accounting for a process and its descendants (nginx workers, if any).

export const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  ticks: number; // utime + stime
}

export function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ... utime stime ...": comm may hold spaces, so split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

export function processTree(root: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = readStat(Number(entry));
    if (!st) continue;
    const list = byParent.get(st.ppid) ?? [];
    list.push(Number(entry));
    byParent.set(st.ppid, list);
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(byParent.get(out[i] as number) ?? []));
  return out;
}

/** CPU time of the process tree, pid → seconds. */
export function cpuSnapshot(root: number): Map<number, number> {
  const snap = new Map<number, number>();
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (st) snap.set(pid, st.ticks / CLK_TCK);
  }
  return snap;
}

export function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let s = 0;
  for (const [pid, t] of after) s += t - (before.get(pid) ?? 0);
  return s;
}

/** The sum of a `/proc/<pid>/status` field in kB (VmHWM, VmRSS) over the tree, in MiB. */
function treeStatusMiB(root: number, field: 'VmHWM' | 'VmRSS'): number {
  let kb = 0;
  const re = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm');
  for (const pid of processTree(root)) {
    try {
      const m = re.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m?.[1]) kb += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kb / 1024;
}

/** Peak resident set (VmHWM) of the tree, in MiB. */
export const peakRssMiB = (root: number): number => treeStatusMiB(root, 'VmHWM');

/** Resident set (VmRSS) of the tree, in MiB. */
export const rssMiB = (root: number): number => treeStatusMiB(root, 'VmRSS');

/** Soft and hard "Max open files" of a process. */
export function nofile(pid: number | 'self'): { soft: number; hard: number } {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  const n = (x: string | undefined): number => (x === undefined || x === 'unlimited' ? Infinity : Number(x));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

/** Raises a process's soft open-files limit to `want` (at most its hard limit) with prlimit(1). */
export function raiseNofile(pid: number, want: number): string {
  const { soft, hard } = nofile(pid);
  if (soft >= want) return `${soft}`;
  const to = Math.min(want, hard);
  try {
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${to}:${Number.isFinite(hard) ? hard : to}`], { stdio: 'ignore' });
  } catch {
    /* not allowed: keep the soft limit */
  }
  const after = nofile(pid).soft;
  return after === soft ? `${soft} (could not raise it)` : `${soft} → ${after}`;
}

/**
 * Opens `count` keep-alive connections (batches of IDLE_BATCH), each sending one GET / and

// ---------------------------------------------------------------------------------------------
// Executables

/**
 * `bin` on PATH, else `apt-get install -y <pkg>` when running as root on Debian (bounded to 5
 * minutes, noted in the report). False when it is still missing.
 */
export function ensureDebianPackage(bin: string, pkg: string, notes: string[]): boolean {
  if (findOnPath(bin)) return true;
  if (process.getuid?.() !== 0 || !findOnPath('apt-get')) return false;
  process.stderr.write(`${bin} missing: apt-get install -y ${pkg}\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { stdio: 'ignore', timeout: 300_000, env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore', timeout: 300_000, env });
    r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { stdio: 'ignore', timeout: 300_000, env });
  }
  const ok = findOnPath(bin) !== undefined;
  notes.push(ok ? `${bin}: was missing, installed from Debian (${pkg}).` : `${bin}: missing, and apt-get install ${pkg} failed.`);
  return ok;
}

export function findOnPath(bin: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}
