// Small helpers the benches share: where the repository is, env parsing, medians, number
// formatting, and what a report's header says about the run (commit, grpc-js version).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is in bench/lib/). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** `1,234` (en-US grouping, `digits` decimals); `–` for undefined or NaN. */
export const fmt = (x: number | undefined, digits = 0): string =>
  x === undefined || Number.isNaN(x) ? '–' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** `a/b` as `0.42×`; `–` when either is missing or `b` is not positive. */
export function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !(b > 0) || Number.isNaN(a) ? '–' : `${(a / b).toFixed(2)}×`;
}

export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${raw}`);
  return n;
}
export function envList(name: string): string[] | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw.split(/[\s,]+/).filter((s) => s !== '');
}

/**
 * The short commit of HEAD (`fallback` when git cannot tell). `dirtySrc`: says so when src/ has
 * uncommitted changes (bench:xds measures the sources, not dist/).
 */
export function gitCommit(o: { dirtySrc?: boolean; fallback?: string } = {}): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (!o.dirtySrc) return sha;
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${sha} + uncommitted src/ changes` : sha;
  } catch {
    return o.fallback ?? 'no commit';
  }
}

export function grpcVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules', '@grpc', 'grpc-js', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '?';
  } catch {
    return '?';
  }
}
