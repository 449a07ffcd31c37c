// Starts the real gateway (`node dist/cli.js run ...`) as a child process on a temporary config
// folder, and runs one-shot CLI commands. Only processes started here are ever signalled, by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, http, sleep, type SimpleResponse } from './net.js';

export const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
/** The CLI under test; GATEHOUSE_CLI points the tests at another build (e.g. a mutated copy). */
export const CLI = process.env.GATEHOUSE_CLI ?? join(ROOT, 'dist', 'cli.js');

/** Children still running, killed if the test worker exits without stopping them. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

export interface GatewayProcess {
  /** `http://127.0.0.1:<admin port>` */
  adminUrl: string;
  adminPort: number;
  proc: ChildProcess;
  /** The config folder passed as `--config`. */
  dir: string;
  /** stdout and stderr so far, interleaved. */
  logs(): string;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  /** GET on the admin port. */
  admin(path: string): Promise<SimpleResponse>;
  /** Writes (atomically: temp file + rename) a file in the config folder. */
  writeFile(name: string, text: string): void;
  removeFile(name: string): void;
  /** SIGTERM, then SIGKILL after 3 s; removes the config folder. */
  stop(): Promise<void>;
}

export interface StartOptions {
  files: Record<string, string>;
  /** Extra CLI arguments, appended after the defaults (`--workers 1` among them: a later `--workers` wins). */
  args?: string[];
  /** Leave `--workers` at the CLI's default (one per core) instead of 1. */
  defaultWorkers?: boolean;
  /** Leave `--labels` at the CLI's default instead of GATEWAY_LABELS. */
  defaultLabels?: boolean;
  /** Default true: resolve once `/healthz/ready` answers 200. */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  /** A replica: `--xds-address` instead of `--config` (the files are not used). */
  xdsAddress?: string;
  /** Extra environment variables for the child (merged into this process's environment). */
  env?: Record<string, string>;
  /** `--kubernetes --kubeconfig <file>`; `--config` is then passed only when `files` is not empty. */
  kubeconfig?: string;
  /** Node.js options for the gateway process (e.g. `--cpu-prof`), before the CLI script. */
  nodeArgs?: string[];
}

/** Default workload labels of the test gateway; `gw()` in yaml.ts selects them. */
export const GATEWAY_LABELS = 'istio=ingressgateway';

export async function startGateway(opts: StartOptions): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-it-'));
  for (const [name, text] of Object.entries(opts.files)) writeFileSync(join(dir, name), text);
  const adminPort = await freePort();
  const kube = opts.kubeconfig ? ['--kubernetes', '--kubeconfig', opts.kubeconfig] : [];
  const files = !opts.kubeconfig || Object.keys(opts.files).length > 0 ? ['--config', dir] : [];
  const source = opts.xdsAddress ? ['--xds-address', opts.xdsAddress] : [...kube, ...files];
  const args = [...(opts.nodeArgs ?? []), CLI, 'run', ...source, '--bind', '127.0.0.1', '--admin-port', String(adminPort), '--xds-port', '0', '--log-level', 'warn', ...(opts.defaultLabels ? [] : ['--labels', GATEWAY_LABELS]), ...(opts.defaultWorkers ? [] : ['--workers', '1']), ...(opts.args ?? [])];
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) });
  live.add(proc);
  let out = '';
  let err = '';
  let all = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    all += d;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    all += d;
  });
  const exited = new Promise<number | string>((res) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      res(code ?? signal ?? -1);
    }),
  );
  let exitedWith: number | string | undefined;
  void exited.then((c) => (exitedWith = c));
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const g: GatewayProcess = {
    adminUrl,
    adminPort,
    proc,
    dir,
    logs: () => all,
    stdout: () => out,
    stderr: () => err,
    exited,
    admin: (path) => http(adminPort, path, { timeoutMs: 3000 }),
    writeFile(name, text) {
      const tmp = join(dir, `.${name}.tmp`);
      writeFileSync(tmp, text);
      renameSync(tmp, join(dir, name));
    },
    removeFile(name) {
      unlinkSync(join(dir, name));
    },
    async stop() {
      if (exitedWith === undefined && proc.pid !== undefined) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => {
          if (exitedWith === undefined) proc.kill('SIGKILL');
        }, 3000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if (opts.waitReady === false) return g;
  // --kubernetes loads @kubernetes/client-node (~0.8 s alone) and lists every kind first: on a
  // loaded 2-core machine that alone has taken more than 10 s.
  const readyTimeoutMs = opts.readyTimeoutMs ?? (opts.kubeconfig ? 30_000 : 10_000);
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exitedWith !== undefined) {
      await g.stop();
      throw new Error(`gateway exited (${exitedWith}) before it was ready:\n${all}`);
    }
    try {
      const r = await http(adminPort, '/healthz/ready', { timeoutMs: 1000 });
      if (r.status === 200) return g;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await g.stop();
      throw new Error(`gateway not ready after ${readyTimeoutMs} ms:\n${all}`);
    }
    await sleep(25);
  }
}

export interface CliResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/cli.js <args>` to completion (killed after `timeoutMs`); `env` replaces the environment. */
export function runCli(args: string[], timeoutMs = 10_000, env?: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    const proc = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    live.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let term: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      proc.kill('SIGTERM');
      term = setTimeout(() => proc.kill('SIGKILL'), 3000);
    }, timeoutMs);
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      clearTimeout(timer);
      if (term) clearTimeout(term);
      // Let the pipes flush.
      setImmediate(() => resolvePromise({ code: code ?? signal ?? -1, stdout, stderr }));
    });
  });
}

/** A fresh temporary folder with these files; the caller removes it. */
export function tempConfigDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-it-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

