// One behaviour suite, every downstream engine (in the style of Hono's shared router test cases):
// a suite registers its cases once per engine with `itOn`, and sends its requests through that
// engine's client. Where an engine cannot show a behaviour, the suite's skip table says so, with
// the reason, instead of the case silently not running: ENGINE × case → reason. The engines:
//
//   uws     plain HTTP on uWebSockets.js (the default HTTP/1.1 engine)
//   strict  plain HTTP on the strict node:http engine (`gatehouse.io/http1-engine: strict`,
//           as `--http1-engine strict` sets it for every port)
//   h2c     a Gateway server with protocol HTTP2: node:http2, h2c with prior knowledge
//   h2      an HTTPS server (SIMPLE): node:http2, h2 negotiated by ALPN
//
// One gateway process serves all four: Gateway `gw` holds the uws, h2c and h2 servers, Gateway
// `gw-strict` the strict one; the suites' VirtualServices bind to both (ENGINE_GATEWAYS).
import { expect, it } from 'vitest';
import { freePorts, h2Request, http, type GetOptions, type SimpleResponse } from './net.js';
import { createCa, type CertFiles, type TestCa } from './openssl-ca.js';
import type { Obj } from './yaml.js';

export type EngineName = 'uws' | 'strict' | 'h2c' | 'h2';
export const ENGINES: readonly EngineName[] = ['uws', 'strict', 'h2c', 'h2'];
/** The Gateways a suite's VirtualServices bind to. */
export const ENGINE_GATEWAYS = ['gw', 'gw-strict'];

/** Case name → engine → why the case does not run there. */
export type SkipTable = Readonly<Record<string, Partial<Record<EngineName, string>>>>;

export interface EngineClient {
  readonly name: EngineName;
  /** The port of this engine (set once the suite's ports are drawn). */
  readonly port: number;
  /** `http` or `https`: what the gateway sees as the request's scheme (x-forwarded-proto, redirects). */
  readonly scheme: 'http' | 'https';
  readonly protocol: 'HTTP/1.1' | 'HTTP/2';
  /** One request, answered as helpers/net.ts `http` answers (fresh connection, whole body). */
  request(path: string, opts?: GetOptions): Promise<SimpleResponse>;
}

/** The four engines of one suite: ports, Gateway resources, clients. */
export class EngineSet {
  readonly clients: Record<EngineName, EngineClient>;
  #ports: Record<EngineName, number> = { uws: 0, strict: 0, h2c: 0, h2: 0 };
  #ca: TestCa | null = null;
  #cert: CertFiles | null = null;

  constructor() {
    const set = this;
    const make = (name: EngineName): EngineClient => ({
      name,
      get port() {
        return set.#ports[name];
      },
      scheme: name === 'h2' ? 'https' : 'http',
      protocol: name === 'uws' || name === 'strict' ? 'HTTP/1.1' : 'HTTP/2',
      request: (path, opts) => (name === 'uws' || name === 'strict' ? http(set.#ports[name], path, opts) : set.#h2(name, path, opts ?? {})),
    });
    this.clients = { uws: make('uws'), strict: make('strict'), h2c: make('h2c'), h2: make('h2') };
  }

  /** Draws the ports and makes the TLS certificate; the Gateway resources to put in the config. */
  async gateways(): Promise<Obj[]> {
    const [a, b, c, d] = (await freePorts(4)) as [number, number, number, number];
    this.#ports = { uws: a, strict: b, h2c: c, h2: d };
    this.#ca = createCa('engines-ca');
    this.#cert = this.#ca.issue('engines-server', { sans: ['DNS:*.test', 'DNS:engines.test'] });
    const api = 'networking.istio.io/v1';
    return [
      {
        apiVersion: api,
        kind: 'Gateway',
        metadata: { name: 'gw', namespace: 'default' },
        spec: {
          selector: { istio: 'ingressgateway' },
          servers: [
            { port: { number: a, name: `http-${a}`, protocol: 'HTTP' }, hosts: ['*'] },
            { port: { number: c, name: `http2-${c}`, protocol: 'HTTP2' }, hosts: ['*'] },
            { port: { number: d, name: `https-${d}`, protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'SIMPLE', serverCertificate: this.#cert.cert, privateKey: this.#cert.key } },
          ],
        },
      },
      {
        apiVersion: api,
        kind: 'Gateway',
        metadata: { name: 'gw-strict', namespace: 'default', annotations: { 'gatehouse.io/http1-engine': 'strict' } },
        spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: b, name: `http-${b}`, protocol: 'HTTP' }, hosts: ['*'] }] },
      },
    ];
  }

  /** Removes the certificates. */
  close(): void {
    this.#ca?.remove();
  }

  /** One request on a fresh HTTP/2 session (h2c prior knowledge, or h2 over TLS with the suite's CA). */
  #h2(name: EngineName, path: string, opts: GetOptions): Promise<SimpleResponse> {
    const { agent: _agent, ...rest } = opts;
    return h2Request(this.#ports[name], path, { ...rest, ...(name === 'h2' ? { tls: { ca: this.#ca!.certPem } } : {}) });
  }
}

/**
 * Registers `fn` as case `name` on `engine`, unless the suite's skip table says why it cannot run
 * there. Every name registered is remembered, so that `checkSkipTable` can hold the table to it.
 */
export function itOn(engine: EngineClient, skips: SkipTable, name: string, fn: () => Promise<void> | void, timeoutMs?: number): void {
  registered(skips).add(name);
  if (skips[name]?.[engine.name] !== undefined) return;
  it(name, fn, timeoutMs);
}

const REGISTERED = new WeakMap<SkipTable, Set<string>>();
function registered(skips: SkipTable): Set<string> {
  let s = REGISTERED.get(skips);
  if (!s) REGISTERED.set(skips, (s = new Set()));
  return s;
}

/** A case of the suite that checks its own skip table: each entry names a case and an engine, with a reason. */
export function checkSkipTable(skips: SkipTable): void {
  it('the skip table names only cases of this suite and engines, each with a reason', () => {
    const names = registered(skips);
    for (const [name, byEngine] of Object.entries(skips)) {
      expect(names.has(name), `skip table: no case named "${name}"`).toBe(true);
      for (const [engine, reason] of Object.entries(byEngine)) {
        expect(ENGINES.includes(engine as EngineName), `skip table: no engine ${engine}`).toBe(true);
        expect(reason!.length).toBeGreaterThan(10);
      }
    }
  });
}

/** Reason shared by the cases that send HTTP/1.1 bytes on a raw socket. */
export const RAW_HTTP1 = 'HTTP/1.1 bytes on a raw socket; HTTP/2 input is framed (hostile-node.test.ts covers HTTP/2 abuse)';

