// Moving a resolved snapshot to the thread that serves requests without one long stall. Posting
// it as it is makes the receiving thread deserialise it in one piece: 300–550 ms for a
// 10,000-VirtualService snapshot (15 MB, nearly all of it route configurations; measured). Here
// the sending thread serialises the large parts in chunks (virtual hosts of each route
// configuration, clusters, endpoints, the parts of the sidecar views) with v8.serialize, and the receiving thread
// deserialises the chunks a few milliseconds at a time, yielding to the event loop between slices
// (setImmediate: requests are served in between). The snapshot is returned only once complete, so
// nothing ever sees part of it.
// Packed against a `base` - the snapshot the receiving thread already holds - only what is not
// the same object in both travels (resolve() keeps unchanged parts as the same objects): the
// receiver takes the rest from its copy of the base, so that the unchanged parts stay the same
// objects there too (its compiled route tables and cluster runtimes are kept for them).
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import { PartsView, type ViewPart } from '../controlplane/sidecar-view.js';
import type { Cluster, ClusterLoadAssignment, RouteConfiguration, SidecarView, Snapshot, VirtualHost } from '../controlplane/snapshot.js';

/** Entries per serialised chunk: 100 virtual hosts (2 routes each) deserialise in ~5 ms (measured). */
const CHUNK = 100;
/** How long the receiving thread deserialises before it lets the event loop run. */
export const SLICE_MS = 8;

type Chunks = Uint8Array[];

/**
 * Entries of a map, in its order: those of the base under the same key (`fromBase[i]` 1) and the
 * others in chunks ([key, value][] each).
 */
interface PackedMap {
  keys: string[];
  fromBase: Uint8Array | null;
  chunks: Chunks;
}

export interface PackedSnapshot {
  /** The snapshot with empty maps for the parts below (small: structured-cloned as it is; key order kept). */
  head: Snapshot;
  /**
   * In the map's order: each route configuration with no virtual hosts, then those in chunks; or
   * the base's (`same`). `fromBase`: per virtual host, its index in the base's configuration of
   * that name, or -1 for the next one from the chunks.
   */
  routes: Array<{ key: string; same: true } | { key: string; same?: undefined; rc: RouteConfiguration; vhosts: Chunks; fromBase: Int32Array | null }>;
  clusters: PackedMap;
  endpoints: PackedMap;
  /** Packed against a base snapshot: the receiver must pass the same one to unpackSnapshot. */
  based: boolean;
  /**
   * The sidecar views in map order. Views made of shared parts (src/controlplane/sidecar-view.ts)
   * travel as the indexes of their parts, each part once in `parts`; another view in a chunk of its own.
   */
  sidecar: { parts: Chunks; views: Array<{ ns: string; parts: number[] } | { ns: string; chunk: Uint8Array }> };
}

/** View parts per chunk (a part is a service's listeners and route configurations, ~1-4 KB). */
const PART_CHUNK = 50;

function packViews(sidecar: ReadonlyMap<string, SidecarView>): PackedSnapshot['sidecar'] {
  const index = new Map<ViewPart, number>();
  const table: ViewPart[] = [];
  const views: PackedSnapshot['sidecar']['views'] = [];
  for (const [ns, v] of sidecar) {
    if (!(v instanceof PartsView)) {
      views.push({ ns, chunk: v8.serialize(v) });
      continue;
    }
    const parts = v.parts.map((p) => {
      let i = index.get(p);
      if (i === undefined) {
        index.set(p, (i = table.length));
        table.push(p);
      }
      return i;
    });
    views.push({ ns, parts });
  }
  return { parts: chunked(table, PART_CHUNK), views };
}

function chunked<T>(items: readonly T[], size: number): Chunks {
  const out: Chunks = [];
  for (let i = 0; i < items.length; i += size) out.push(v8.serialize(items.slice(i, i + size)));
  return out;
}

function packMap<V>(m: ReadonlyMap<string, V>, base: ReadonlyMap<string, V> | undefined): PackedMap {
  const keys = [...m.keys()];
  if (!base) return { keys, fromBase: null, chunks: chunked([...m], CHUNK) };
  const fromBase = new Uint8Array(keys.length);
  const fresh: Array<[string, V]> = [];
  keys.forEach((k, i) => {
    const v = m.get(k)!;
    if (base.get(k) === v) fromBase[i] = 1;
    else fresh.push([k, v]);
  });
  return { keys, fromBase, chunks: chunked(fresh, CHUNK) };
}

function packRoute(key: string, rc: RouteConfiguration, base: RouteConfiguration | undefined): PackedSnapshot['routes'][number] {
  if (base === rc) return { key, same: true };
  const head = { ...rc, virtual_hosts: [] };
  if (!base) return { key, rc: head, vhosts: chunked(rc.virtual_hosts, CHUNK), fromBase: null };
  const at = new Map<VirtualHost, number>();
  base.virtual_hosts.forEach((vh, i) => at.set(vh, i));
  const fromBase = new Int32Array(rc.virtual_hosts.length);
  const fresh: VirtualHost[] = [];
  rc.virtual_hosts.forEach((vh, i) => {
    const j = at.get(vh);
    fromBase[i] = j ?? -1;
    if (j === undefined) fresh.push(vh);
  });
  return { key, rc: head, vhosts: chunked(fresh, CHUNK), fromBase };
}

/**
 * Serialises a snapshot in chunks; `transfer` lists the buffers that may be moved, not copied.
 * With `base` (what the receiver holds), the parts that are the same objects in both stay behind.
 */
export function packSnapshot(s: Snapshot, base?: Snapshot): { packed: PackedSnapshot; transfer: ArrayBuffer[] } {
  const packed: PackedSnapshot = {
    head: { ...s, routes: new Map(), clusters: new Map(), endpoints: new Map(), sidecar: new Map() },
    routes: [...s.routes].map(([key, rc]) => packRoute(key, rc, base?.routes.get(key))),
    clusters: packMap(s.clusters, base?.clusters),
    endpoints: packMap(s.endpoints, base?.endpoints),
    based: base !== undefined,
    sidecar: packViews(s.sidecar),
  };
  const transfer: ArrayBuffer[] = [];
  const seen = new Set<ArrayBufferLike>();
  const add = (c: Chunks): void => {
    for (const b of c) {
      // Only a buffer the chunk owns alone can be moved (a pooled one is copied).
      if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer && !seen.has(b.buffer)) {
        seen.add(b.buffer);
        transfer.push(b.buffer);
      }
    }
  };
  for (const r of packed.routes) if (!r.same) add(r.vhosts);
  add(packed.clusters.chunks);
  add(packed.endpoints.chunks);
  add(packed.sidecar.parts);
  add(packed.sidecar.views.flatMap((v) => ('chunk' in v ? [v.chunk] : [])));
  return { packed, transfer };
}

/** Yields to the event loop (I/O included) once the current slice has used its time. */
class Slicer {
  #deadline: number;
  readonly #sliceMs: number;
  constructor(sliceMs: number) {
    this.#sliceMs = sliceMs;
    this.#deadline = performance.now() + sliceMs;
  }
  async deserialize<T>(chunk: Uint8Array): Promise<T> {
    if (performance.now() >= this.#deadline) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.#deadline = performance.now() + this.#sliceMs;
    }
    return v8.deserialize(chunk) as T;
  }
  async entries<V>(p: PackedMap, base: ReadonlyMap<string, V> | undefined): Promise<Map<string, V>> {
    const fresh = new Map<string, V>();
    for (const c of p.chunks) for (const [k, v] of await this.deserialize<Array<[string, V]>>(c)) fresh.set(k, v);
    if (!p.fromBase) return fresh;
    const m = new Map<string, V>();
    p.keys.forEach((k, i) => m.set(k, p.fromBase![i] === 1 ? base!.get(k)! : fresh.get(k)!));
    return m;
  }
}

/**
 * The snapshot back, deserialised in slices of about `sliceMs` with the event loop running between
 * them. Resolves only when every part is in place.
 */
export async function unpackSnapshot(p: PackedSnapshot, sliceMs = SLICE_MS, base?: Snapshot): Promise<Snapshot> {
  if (p.based && !base) throw new Error('a snapshot packed against a base snapshot was unpacked without it');
  const slicer = new Slicer(sliceMs);
  const routes = new Map<string, RouteConfiguration>();
  for (const r of p.routes) {
    if (r.same) {
      routes.set(r.key, base!.routes.get(r.key)!);
      continue;
    }
    const fresh: VirtualHost[] = [];
    for (const c of r.vhosts) for (const vh of await slicer.deserialize<VirtualHost[]>(c)) fresh.push(vh);
    const from = r.fromBase;
    const old = from ? base!.routes.get(r.key)!.virtual_hosts : [];
    let next = 0;
    const virtual_hosts = from ? Array.from(from, (j) => (j >= 0 ? old[j]! : fresh[next++]!)) : fresh;
    routes.set(r.key, Object.assign(r.rc, { virtual_hosts }));
  }
  const clusters = await slicer.entries<Cluster>(p.clusters, base?.clusters);
  const endpoints = await slicer.entries<ClusterLoadAssignment>(p.endpoints, base?.endpoints);
  const table: ViewPart[] = [];
  for (const c of p.sidecar.parts) for (const part of await slicer.deserialize<ViewPart[]>(c)) table.push(part);
  const sidecar = new Map<string, SidecarView>();
  for (const v of p.sidecar.views) sidecar.set(v.ns, 'chunk' in v ? await slicer.deserialize<SidecarView>(v.chunk) : new PartsView(v.parts.map((i) => table[i]!)));
  return Object.assign(p.head, { routes, clusters, endpoints, sidecar });
}
