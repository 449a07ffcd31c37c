// A snapshot travels from the configuration thread in chunks and is deserialised in slices
// (src/workers/snapshot-transfer.ts): the result must be the very same snapshot, the event loop
// must run between slices, and nothing may see the snapshot before it is complete.
import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { packSnapshot, unpackSnapshot, type PackedSnapshot } from '../../src/workers/snapshot-transfer.js';

function bigSnapshot(n: number, opts: { variant?: number; previous?: Snapshot } = {}): Snapshot {
  const docs = [
    `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 81, name: http2, protocol: HTTP}
    hosts: ["*"]`,
  ];
  for (let i = 0; i < n; i++) {
    docs.push(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se-${i}, namespace: ns}
spec:
  hosts: [svc-${i}.ns.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.${(i % 200) + 1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-${i}, namespace: ns}
spec:
  hosts: [vs-${i}.example.com]
  gateways: [gw]
  http:
  - name: a
    match: [{headers: {x-v: {regex: "a[0-9]+"}}}]
    route: [{destination: {host: svc-${i}.ns.svc.cluster.local}}]
  - name: b
    route: [{destination: {host: svc-${i}.ns.svc.cluster.local}}]${i === 7 && opts.variant ? `\n    headers: {response: {set: {x-flip: v${opts.variant}}}}` : ''}`);
  }
  const { resources, problems } = parseYamlText(docs.join('\n---\n'), 't.yaml');
  expect(problems.filter((p) => p.severity === 'error')).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'ns', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG }, opts.previous);
}

/** JSON with Maps as entry lists: compares content and every key order. */
const dump = (s: Snapshot): string => JSON.stringify(s, (_k, v: unknown) => (v instanceof Map ? { map: [...v] } : v));

/** Through a real MessageChannel, with the transfer list, as the configuration thread posts it. */
async function post(p: { packed: PackedSnapshot; transfer: ArrayBuffer[] }): Promise<PackedSnapshot> {
  const { port1, port2 } = new MessageChannel();
  try {
    return await new Promise<PackedSnapshot>((res) => {
      port2.once('message', (m: PackedSnapshot) => res(m));
      port1.postMessage(p.packed, p.transfer);
    });
  } finally {
    port1.close();
    port2.close();
  }
}

describe('snapshot transfer in chunks', () => {
  it('gives back the same snapshot (content, map order, key order), through a MessageChannel with transfer', async () => {
    const s = bigSnapshot(260); // more than two chunks of virtual hosts, clusters and endpoints
    expect(s.routes.get('http.80')!.virtual_hosts.length).toBeGreaterThan(250);
    expect(s.clusters.size).toBeGreaterThan(250);
    const before = dump(s);
    const p = packSnapshot(s);
    expect(p.transfer.length).toBeGreaterThan(3);
    const got = await unpackSnapshot(await post(p));
    expect(dump(got)).toBe(before);
    expect(got.routes).toBeInstanceOf(Map);
    expect([...got.routes.keys()]).toEqual([...s.routes.keys()]);
    expect(Object.keys(got)).toEqual(Object.keys(s));
    expect(Object.keys(got.routes.get('http.80')!)).toEqual(Object.keys(s.routes.get('http.80')!));
    // Packing leaves the original alone.
    expect(dump(s)).toBe(before);
  });

  it('lets the event loop run between slices, and resolves only with the complete snapshot', async () => {
    const s = bigSnapshot(400);
    const packed = await post(packSnapshot(s));
    let done = false;
    let turns = 0;
    let sawPartial = false;
    const tick = (): void => {
      if (done) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const promise = unpackSnapshot(packed, 0).then((x) => {
      done = true;
      return x;
    });
    // While it unpacks, the object the caller will get is not reachable: only the promise is.
    const watcher = setInterval(() => {
      if (!done && packed.head.routes.size > 0) sawPartial = true;
    }, 0);
    const got = await promise;
    clearInterval(watcher);
    expect(turns).toBeGreaterThan(5); // other callbacks ran while it deserialised
    expect(got.routes.get('http.80')!.virtual_hosts.length).toBe(s.routes.get('http.80')!.virtual_hosts.length);
    expect(got.clusters.size).toBe(s.clusters.size);
    expect(got.endpoints.size).toBe(s.endpoints.size);
    expect(sawPartial).toBe(false);
    expect(dump(got)).toBe(dump(s));
  });

  it('a new version packed against the one the receiver holds arrives whole, its unchanged parts the objects the receiver has', async () => {
    const a = bigSnapshot(150);
    const held = await unpackSnapshot(await post(packSnapshot(a)));
    // One VirtualService changed (vs-7's response header): the rest resolves to a's objects.
    const b = bigSnapshot(150, { variant: 1, previous: a });
    expect(b.hash).toBe(bigSnapshot(150, { variant: 1 }).hash);
    expect(dump(b)).toBe(dump(bigSnapshot(150, { variant: 1 })));
    const got = await unpackSnapshot(await post(packSnapshot(b, a)), undefined, held);
    expect(dump(got)).toBe(dump(b));
    const vhosts = got.routes.get('http.80')!.virtual_hosts;
    const changed = vhosts.findIndex((vh) => vh.domains.includes('vs-7.example.com'));
    expect(vhosts[changed]).not.toBe(held.routes.get('http.80')!.virtual_hosts[changed]);
    expect(vhosts.filter((vh, i) => vh === held.routes.get('http.80')!.virtual_hosts[i]).length).toBe(vhosts.length - 1);
    for (const [name, c] of got.clusters) expect(c).toBe(held.clusters.get(name));
    for (const [name, e] of got.endpoints) expect(e).toBe(held.endpoints.get(name));
    // Packed against a base, it cannot be taken in without it.
    await expect(unpackSnapshot(await post(packSnapshot(b, a)))).rejects.toThrow(/base/);
  });
});
