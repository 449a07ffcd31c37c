// autocannon (in the bench process): HTTP and HTTPS load (HTTPS: wrk cannot set the TLS server
// name apart from the URL's host), and every HTTP scenario with BENCH_CLIENT=autocannon.
// autocannon 9 ships no type declarations (@types/autocannon is not installed); the few fields
// used here are typed below as `Autocannon`.
// @ts-ignore -- untyped CommonJS module
import autocannon from 'autocannon';
import { scHost, type Sample, type Scenario, type Settings, type Target } from '../types.js';
import { HOST } from '../wire.js';
import { closeSample, endWindow, Latencies, portFor, running, startWindow } from './measure.js';

interface AcOptions {
  url: string;
  connections: number;
  duration: number;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: Buffer;
  timeout: number;
  servername?: string; // SNI for https:// URLs (autocannon never verifies the certificate)
}
interface AcResult {
  duration: number; // seconds, measured
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number; sent: number };
  statusCodeStats: Record<string, { count: number }>;
}
interface AcInstance extends PromiseLike<AcResult> {
  on(event: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  stop(): void;
}
type Autocannon = (opts: AcOptions) => AcInstance;
export const runAutocannon = autocannon as unknown as Autocannon;

export async function loadAutocannon(s: Settings, target: Target, sc: Scenario, seconds: number): Promise<Sample> {
  const tls = sc.kind === 'https';
  const lat = new Latencies();
  const w = startWindow(target);
  const inst = runAutocannon({
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${portFor(target, sc)}${sc.path}`,
    ...(tls ? { servername: HOST } : {}),
    connections: s.connections,
    duration: seconds,
    method: sc.method,
    headers: { host: scHost(sc), ...(sc.body ? { 'content-type': 'application/octet-stream' } : {}), ...(sc.headers ?? {}) },
    ...(sc.body ? { body: sc.body } : {}),
    timeout: 10,
  });
  running.current = inst;
  inst.on('response', (_client, status, _bytes, ms) => {
    if (status >= 200 && status < 300) lat.add(ms);
  });
  const r = await inst;
  running.current = undefined;
  const { clientCpuPct } = endWindow(w);
  const reqs = r.requests.total;
  const [p50 = NaN, p99 = NaN] = lat.percentiles([50, 99]);
  const sample: Sample = {
    reqs,
    rps: reqs / r.duration,
    p50,
    p99,
    non2xx: r.non2xx,
    errors: r.errors,
    clientCpuPct,
  };
  return closeSample(sample, target, sc, w.cpuBefore, reqs);
}
