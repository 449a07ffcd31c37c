// In-process stand-ins for the request lifecycle's two sides, no sockets: a ResponseSink that
// records what the client would get, and an UpstreamPool whose requests the test answers by hand.
// With them an Exchange runs the real filter chain, retry state and router.
import type { Cluster } from '../../src/controlplane/snapshot.js';
import type { DataPlaneContext } from '../../src/ingress/context.js';
import { Exchange } from '../../src/ingress/exchange.js';
import type { FilterChain } from '../../src/ingress/filters/chain.js';
import type { HeaderValue, ResponseSink } from '../../src/ingress/sink.js';
import type { RequestHead } from '../../src/routing/request.js';
import { compileRetry, type CompiledCors, type CompiledFault, type CompiledRoute, type ForwardAction, type RouteActionCompiled } from '../../src/routing/route-table.js';
import type { IstioMetrics } from '../../src/telemetry/metrics.js';
import { ClusterRuntime, ClusterState, type ClusterSet, type UpstreamEndpoint } from '../../src/upstream/cluster-manager.js';
import { UpstreamError, type UpstreamErrorKind, type UpstreamHandler, type UpstreamPool, type UpstreamRequest } from '../../src/upstream/errors.js';

/** What the client got. */
export class FakeSink implements ResponseSink {
  remoteAddress = '203.0.113.7';
  closed = false;
  status = 0;
  headers: Record<string, string> = {};
  body = Buffer.alloc(0);
  ended = false;
  wasReset = false;
  pauses = 0;
  resumes = 0;
  #done: () => void = () => undefined;
  readonly done = new Promise<void>((r) => (this.#done = r));

  start(status: number, headers: readonly HeaderValue[]): void {
    this.status = status;
    for (let i = 0; i < headers.length; i += 2) this.headers[String(headers[i]).toLowerCase()] = String(headers[i + 1]);
  }
  write(chunk: Buffer): boolean {
    this.body = Buffer.concat([this.body, chunk]);
    return true;
  }
  onDrain(cb: () => void): void {
    cb();
  }
  end(chunk?: Buffer): void {
    if (chunk) this.write(chunk);
    this.ended = true;
  }
  reset(): void {
    this.wasReset = true;
  }
  batch(fn: () => void): void {
    fn();
  }
  pauseRequestBody(): void {
    this.pauses++;
  }
  resumeRequestBody(): void {
    this.resumes++;
  }
  finished(): void {
    this.closed = true;
    this.#done();
  }
  get text(): string {
    return this.body.toString('utf8');
  }
}

/** One request a FakePool was given, with the handler to answer it through. */
export interface Dispatched {
  readonly req: UpstreamRequest;
  readonly handler: UpstreamHandler;
  readonly endpoint: string;
  header(name: string): string | undefined;
  /** Answers it: status, headers, body, then the end. */
  answer(status: number, headers?: Record<string, string>, body?: string): void;
  /** Fails it before any response. */
  fail(kind: UpstreamErrorKind, code?: string): void;
}

/** Pools of the endpoints of one fake cluster; every request waits for the test to answer it. */
export class FakeUpstream {
  readonly dispatched: Dispatched[] = [];
  #waiters: Array<() => void> = [];

  pool(endpoint: string): UpstreamPool {
    return {
      dispatch: (req, handler) => {
        let aborted = false;
        handler.onStart(() => {
          aborted = true;
        });
        const d: Dispatched = {
          req,
          handler,
          endpoint,
          header: (name) => {
            const h = req.headers;
            for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
            return undefined;
          },
          answer(status, headers = {}, body = '') {
            if (aborted) return;
            const raw: Buffer[] = [];
            for (const [k, v] of Object.entries(headers)) raw.push(Buffer.from(k), Buffer.from(v));
            raw.push(Buffer.from('content-length'), Buffer.from(String(Buffer.byteLength(body))));
            if (!handler.onHead(status, raw, () => undefined) || aborted) return;
            if (body) handler.onData(Buffer.from(body));
            handler.onEnd(null);
          },
          fail(kind, code) {
            if (!aborted) handler.onError(new UpstreamError(kind, `fake ${kind}`, code));
          },
        };
        this.dispatched.push(d);
        for (const w of this.#waiters.splice(0)) w();
      },
      close: () => Promise.resolve(),
      destroy: () => Promise.resolve(),
    };
  }

  /** The nth request (0-based), once it was dispatched (retries come after a back-off). */
  async request(n: number): Promise<Dispatched> {
    while (this.dispatched.length <= n) await new Promise<void>((r) => this.#waiters.push(r));
    return this.dispatched[n]!;
  }
}

function cluster(name: string, maxRetries: number): Cluster {
  return {
    name,
    type: 'STATIC',
    connect_timeout: { seconds: 1, nanos: 0 },
    lb_policy: 'ROUND_ROBIN',
    circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: maxRetries }] },
    common_http_protocol_options: { idle_timeout: { seconds: 3600, nanos: 0 }, max_requests_per_connection: 0 },
    metadata: { filter_metadata: { istio: { host: 'svc', name: 'svc', namespace: 'default', port: 80, subset: '', kind: 'service', destination_rule: '', min_health_percent: 0 } } },
  } as unknown as Cluster;
}

/** A cluster `svc` of `endpoints` (host:port names) served by `upstream`. */
export function fakeCluster(upstream: FakeUpstream, endpoints: string[], opts: { maxRetries?: number } = {}): ClusterRuntime {
  const state = new ClusterState();
  const c = cluster('outbound|80||svc.default.svc.cluster.local', opts.maxRetries ?? 4294967295);
  const eps: UpstreamEndpoint[] = endpoints.map((hostPort) => {
    const [address, port] = hostPort.split(':');
    return { address: address!, port: Number(port), hostPort, weight: 1, labels: {}, workload: hostPort, namespace: 'default', pool: upstream.pool(hostPort), active: 0, health: state.health(hostPort) };
  });
  state.configure(c, new Set(endpoints));
  return new ClusterRuntime(c, eps, state);
}

/** What the metrics were told: one entry per finished request. */
export interface Recorded {
  code: number;
  flags: string;
}

export function fakeContext(clusters: ClusterRuntime[], opts: { filters?: FilterChain } = {}): { ctx: DataPlaneContext; recorded: Recorded[] } {
  const recorded: Recorded[] = [];
  const byName = new Map(clusters.map((c) => [c.name, c]));
  const metrics = {
    handle: (_k: unknown, _d: unknown, _p: string, code: number, flags: string) => ({ record: () => recorded.push({ code, flags }) }),
  } as unknown as IstioMetrics;
  const ctx: DataPlaneContext = { clusters: { get: (name: string) => byName.get(name) } as unknown as ClusterSet, metrics, accessLog: null, ...(opts.filters ? { filters: opts.filters } : {}) };
  return { ctx, recorded };
}

export interface RouteOptions {
  retryOn?: string;
  attempts?: number;
  perTryTimeoutMs?: number;
  statusCodes?: number[];
  avoidPreviousHosts?: boolean;
  timeoutMs?: number;
  fault?: Partial<CompiledFault>;
  cors?: CompiledCors;
  action?: RouteActionCompiled;
}

/** A route to `svc` (Istio's default retry policy unless told otherwise). */
export function route(opts: RouteOptions = {}): CompiledRoute {
  const forward: ForwardAction = {
    kind: 'forward',
    clusters: [{ name: 'outbound|80||svc.default.svc.cluster.local', upTo: 1, request: null, response: null }],
    totalWeight: 1,
    timeoutMs: opts.timeoutMs ?? 0,
    retry: compileRetry(opts.retryOn ?? 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', opts.attempts ?? 2, opts.perTryTimeoutMs ?? 0, opts.statusCodes ?? [503], opts.avoidPreviousHosts ?? true),
    rewritePath: null,
    hostRewrite: null,
    mirrors: null,
  };
  const fault: CompiledFault | null = opts.fault ? { delayMs: 0, delayPerMillion: 0, abortStatus: 0, abortGrpcStatus: -1, abortPerMillion: 0, ...opts.fault } : null;
  return { name: 'r', operation: '', config: '', matches: () => true, action: opts.action ?? forward, request: null, response: null, fault, cors: opts.cors ?? null };
}

export function head(method = 'GET', path = '/', headers: string[] = []): RequestHead {
  return { method, path, query: '', host: 'svc.test', authority: 'svc.test', scheme: 'http', headers: ['x-request-id', 'rid-1', ...headers] };
}

/** Starts a request (no body) on a fake sink. */
export function start(ctx: DataPlaneContext, r: CompiledRoute | undefined, h: RequestHead = head()): FakeSink {
  const sink = new FakeSink();
  new Exchange(sink, ctx, h, r).begin(false, h.headers.slice());
  return sink;
}
