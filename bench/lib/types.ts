// The shapes the bench's parts hand each other: a scenario (a row of run.ts's table), the
// settings of a run, a started target, the https certificate, one measured window.
import type { Child } from './proc.js';
import { HOST } from './wire.js';

export type TargetName = 'direct' | 'gateway' | 'nginx' | 'bare';
/** `bare` (PERFORMANCE.md's bare uWS + undici proxy) runs only when BENCH_TARGETS names it. */
export const TARGET_ORDER: TargetName[] = ['direct', 'gateway', 'nginx', 'bare'];
export const DEFAULT_TARGETS: TargetName[] = ['direct', 'gateway', 'nginx'];

export interface Scenario {
  id: string;
  title: string;
  /**
   * http (default): wrk (or autocannon) over HTTP/1.1; https: autocannon over TLS; h2: h2load over
   * TLS with ALPN h2; grpc: h2load over h2c (or the grpc-js loop, BENCH_GRPC_CLIENT=grpc-js); ws: a
   * `ws` echo loop.
   */
  kind?: 'http' | 'https' | 'h2' | 'grpc' | 'ws';
  method: 'GET' | 'POST';
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
  host?: string; // Host header (default bench.local)
  expectBytes: number; // response body length that the sanity check expects
  /** The gateway's port of the strict HTTP/1.1 engine (node:http) instead of its uWS port; other targets as usual. */
  strict?: boolean;
}
export const scHost = (sc: Scenario): string => sc.host ?? HOST;

export interface Settings {
  rounds: number;
  duration: number;
  warmup: number;
  connections: number;
  scenarios: Scenario[];
  targets: TargetName[];
  gatewayCli: string;
  gatewayArgs: string[];
  gatewayNodeArgs: string[];
  /** Data-plane threads of the gateway (`--workers`) and worker processes of nginx, alike. */
  workers: number;
  /** Load generator of the plain-HTTP scenarios: wrk (C, far cheaper per request) or autocannon. */
  client: 'wrk' | 'autocannon';
  /** Load generator of the grpc scenario: h2load (C, nghttp2) or the grpc-js loop. */
  grpcClient: 'h2load' | 'grpc-js';
  readyTimeoutMs: number;
  keepTmp: boolean;
  /** BENCH_TRACING: the gateway samples this percent of requests and exports their spans to a Zipkin receiver in the bench process. */
  tracing?: { percent: number; port: number };
}

export interface Target {
  name: TargetName;
  port: number; // HTTP/1.1
  strictPort?: number; // gateway: HTTP/1.1 on the strict engine (node:http)
  tlsPort?: number; // HTTPS (only when the https or h2 scenario runs)
  h2Port?: number; // HTTPS with ALPN h2 (gateway: node:http2; nginx: listen … ssl http2; direct: a node:http2 server in the upstream child)
  grpcPort: number; // h2c gRPC
  child?: Child; // CPU/RSS are measured for targets that are our children (gateway, nginx)
  config?: { dir: string; base: string; text: string }; // gateway: its config folder, the file without/with extra routes
}

export interface CertPaths {
  cert: string;
  key: string;
}

export interface Sample {
  reqs: number;
  rps: number;
  p50: number; // ms
  p99: number; // ms
  non2xx: number;
  errors: number;
  cpuUsPerReq?: number;
  /** Percent of the target's CPU per process of its tree (root first), when it has several. */
  cpuSplit?: number[];
  clientCpuPct: number;
  errorDetail?: string; // gRPC: the failed calls by status
}

/** What the extra measurements found, for the targets table. */
export interface Figures {
  idle?: { rss: number; open: number };
  idleLoaded?: { rss: number; open: number };
  /** Idle VmRSS (MiB) of fresh gateways on the bundled config, one worker: the median and each start. */
  startup?: { rss: number; samples: number[] };
  swap?: { gapMs: number; p99Ratio: number };
}
