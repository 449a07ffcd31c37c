// DnsResolver against the test DNS server: TTL-bounded caching, background refresh of names in
// use, last good answer kept on failure, NXDOMAIN, bounded timeouts, the metric.
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DnsResolver, literalAddresses, serversFromEnv } from '../../src/upstream/dns.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(25);
  }
  return check();
}

interface LogLine {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}

function fakeLog(lines: LogLine[]): ConstructorParameters<typeof DnsResolver>[0] extends infer O ? (O extends { log?: infer L } ? L : never) : never {
  const mk = (level: string) => (obj: Record<string, unknown>, msg: string) => lines.push({ level, obj, msg });
  return { warn: mk('warn'), info: mk('info'), error: mk('error'), debug: mk('debug') } as never;
}

describe('DnsResolver', () => {
  let dns: TestDnsServer;
  const resolvers: DnsResolver[] = [];
  const make = (opts: ConstructorParameters<typeof DnsResolver>[0] = {}): DnsResolver => {
    const r = new DnsResolver({ servers: [dns.address], timeoutMs: 200, tries: 1, ...opts });
    resolvers.push(r);
    return r;
  };

  beforeAll(async () => {
    dns = await startDnsServer();
  });
  afterAll(async () => {
    await dns.close();
  });
  afterEach(() => {
    for (const r of resolvers.splice(0)) r.close();
    dns.drop = false;
    dns.records.clear();
  });

  it('resolves A records, never looks up IP literals or localhost', async () => {
    dns.set('a.test', ['127.0.0.1', '127.0.0.2'], 30);
    const r = make();
    expect([...(await r.resolve('A.Test.'))]).toEqual(['127.0.0.1', '127.0.0.2']);
    expect(r.addresses('a.test')).toEqual(['127.0.0.1', '127.0.0.2']);
    expect(await r.resolve('10.1.2.3')).toEqual(['10.1.2.3']);
    expect(await r.resolve('localhost')).toEqual(['127.0.0.1']);
    expect(literalAddresses('[::1]')).toEqual(['::1']);
    expect(dns.queries.get('localhost')).toBeUndefined();
    expect(dns.queries.get('10.1.2.3')).toBeUndefined();
  });

  it('serves a cached answer until its TTL passes, then re-resolves names in use', async () => {
    dns.set('ttl.test', ['127.0.0.1'], 1);
    const r = make();
    const changes: string[][] = [];
    r.onChange = (_h, a) => changes.push([...a]);
    r.retain(['ttl.test']);
    expect(await r.waitSettled(['ttl.test'], 2000)).toBe(true);
    expect(r.addresses('ttl.test')).toEqual(['127.0.0.1']);
    dns.set('ttl.test', ['127.0.0.9'], 1);
    // Not before the TTL...
    await sleep(300);
    expect(r.addresses('ttl.test')).toEqual(['127.0.0.1']);
    // ...but soon after it.
    expect(await until(() => r.addresses('ttl.test')?.[0] === '127.0.0.9', 3000)).toBe(true);
    expect(changes).toEqual([['127.0.0.1'], ['127.0.0.9']]);
  });

  it('caps a long TTL and raises a TTL of 0 to 1 s', async () => {
    dns.set('zero.test', ['127.0.0.1'], 0);
    const r = make();
    r.retain(['zero.test']);
    await r.waitSettled(['zero.test'], 2000);
    const before = dns.queries.get('zero.test') ?? 0;
    await sleep(500);
    // A TTL of 0 does not mean a query per request / a busy loop.
    expect(dns.queries.get('zero.test') ?? 0).toBe(before);
    expect(await until(() => (dns.queries.get('zero.test') ?? 0) > before, 2000)).toBe(true);
  });

  it('keeps the last good answer when a refresh fails, logs once per failure streak, counts', async () => {
    dns.set('keep.test', ['127.0.0.1'], 1);
    const lines: LogLine[] = [];
    const registry = new Registry();
    const r = make({ log: fakeLog(lines), registry });
    r.retain(['keep.test']);
    await r.waitSettled(['keep.test'], 2000);
    dns.drop = true;
    // Past the TTL and a few failed refreshes (timeouts of 200 ms, retried after 1 s, 2 s).
    await sleep(3000);
    expect(r.addresses('keep.test')).toEqual(['127.0.0.1']);
    expect(await r.resolve('keep.test')).toEqual(['127.0.0.1']);
    const warns = lines.filter((l) => l.level === 'warn');
    expect(warns).toHaveLength(1);
    expect(warns[0]!.msg).toContain('keep.test');
    expect(warns[0]!.msg).toContain('ETIMEOUT');
    expect(warns[0]!.msg).toContain('keeping the last answer');
    dns.drop = false;
    dns.set('keep.test', ['127.0.0.3'], 1);
    expect(await until(() => r.addresses('keep.test')?.[0] === '127.0.0.3', 6000)).toBe(true);
    expect(lines.some((l) => l.level === 'info' && l.msg.includes('recovered'))).toBe(true);
    const text = await registry.metrics();
    expect(text).toMatch(/gatehouse_dns_resolutions_total\{host="keep.test",result="ok"\} [2-9]/);
    expect(text).toMatch(/gatehouse_dns_resolutions_total\{host="keep.test",result="failure"\} [1-9]/);
  }, 15_000);

  it('a name that never resolved has no addresses; NXDOMAIN is reported as ENOTFOUND', async () => {
    const lines: LogLine[] = [];
    const r = make({ log: fakeLog(lines) });
    r.retain(['nope.test']);
    expect(await r.waitSettled(['nope.test'], 2000)).toBe(true);
    expect(r.addresses('nope.test') ?? []).toEqual([]);
    await expect(r.resolve('nope.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    expect(lines.find((l) => l.level === 'warn')?.msg).toMatch(/nope\.test failed: ENOTFOUND/);
  });

  it('bounds a lookup when the server does not answer', async () => {
    dns.drop = true;
    const r = make();
    const t0 = Date.now();
    await expect(r.resolve('dead.test')).rejects.toMatchObject({ code: expect.stringMatching(/ETIMEOUT|ETIMEDOUT|ECONNREFUSED/) });
    expect(Date.now() - t0).toBeLessThan(1500);
    // The default bound (1 s, 2 tries) stays well below the 5 s of cluster warming.
    const d = make({ timeoutMs: undefined, tries: undefined });
    const t1 = Date.now();
    await expect(d.resolve('dead2.test')).rejects.toBeTruthy();
    expect(Date.now() - t1).toBeLessThan(4500);
  }, 10_000);

  it('reads GATEHOUSE_DNS_SERVERS', () => {
    expect(serversFromEnv({ GATEHOUSE_DNS_SERVERS: '127.0.0.1:5353, 10.0.0.1' })).toEqual(['127.0.0.1:5353', '10.0.0.1']);
    expect(serversFromEnv({})).toBeUndefined();
    const r = new DnsResolver({ servers: serversFromEnv({ GATEHOUSE_DNS_SERVERS: '127.0.0.1:5353' }) });
    resolvers.push(r);
    expect(r.servers()).toEqual(['127.0.0.1:5353']);
  });
});
