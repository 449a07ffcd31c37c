// Moving a resolved snapshot to the thread that serves requests without one long stall. Posting
// it as it is makes the receiving thread deserialise it in one piece: 300–550 ms for a
// 10,000-VirtualService snapshot (15 MB, nearly all of it route configurations; measured). Here
// the sending thread serialises the large parts in chunks (virtual hosts of each route
// configuration, clusters, endpoints, the parts of the sidecar views) with v8.serialize, and the receiving thread
// deserialises the chunks a few milliseconds at a time, yielding to the event loop between slices
// (setImmediate: requests are served in between). The snapshot is returned only once complete, so
// nothing ever sees part of it.
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import { PartsView, type ViewPart } from '../controlplane/sidecar-view.js';
import type { Cluster, ClusterLoadAssignment, RouteConfiguration, SidecarView, Snapshot, VirtualHost } from '../controlplane/snapshot.js';

/** Entries per serialised chunk: 100 virtual hosts (2 routes each) deserialise in ~5 ms (measured). */
const CHUNK = 100;
/** How long the receiving thread deserialises before it lets the event loop run. */
export const SLICE_MS = 8;

type Chunks = Uint8Array[];

export interface PackedSnapshot {
  /** The snapshot with empty maps for the parts below (small: structured-cloned as it is; key order kept). */
  head: Snapshot;
  /** In the map's order: each route configuration with no virtual hosts, then those in chunks. */
  routes: Array<{ key: string; rc: RouteConfiguration; vhosts: Chunks }>;
  /** Map entries in chunks ([key, value][] each). */
  clusters: Chunks;
  endpoints: Chunks;
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

/** Serialises a snapshot in chunks; `transfer` lists the buffers that may be moved, not copied. */
export function packSnapshot(s: Snapshot): { packed: PackedSnapshot; transfer: ArrayBuffer[] } {
  const packed: PackedSnapshot = {
    head: { ...s, routes: new Map(), clusters: new Map(), endpoints: new Map(), sidecar: new Map() },
    routes: [...s.routes].map(([key, rc]) => ({ key, rc: { ...rc, virtual_hosts: [] }, vhosts: chunked(rc.virtual_hosts, CHUNK) })),
    clusters: chunked([...s.clusters], CHUNK),
    endpoints: chunked([...s.endpoints], CHUNK),
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
  for (const r of packed.routes) add(r.vhosts);
  add(packed.clusters);
  add(packed.endpoints);
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
  async entries<K, V>(chunks: Chunks): Promise<Map<K, V>> {
    const m = new Map<K, V>();
    for (const c of chunks) for (const [k, v] of await this.deserialize<Array<[K, V]>>(c)) m.set(k, v);
    return m;
  }
}

/**
 * The snapshot back, deserialised in slices of about `sliceMs` with the event loop running between
 * them. Resolves only when every part is in place.
 */
export async function unpackSnapshot(p: PackedSnapshot, sliceMs = SLICE_MS): Promise<Snapshot> {
  const slicer = new Slicer(sliceMs);
  const routes = new Map<string, RouteConfiguration>();
  for (const r of p.routes) {
    const virtual_hosts: VirtualHost[] = [];
    for (const c of r.vhosts) for (const vh of await slicer.deserialize<VirtualHost[]>(c)) virtual_hosts.push(vh);
    routes.set(r.key, Object.assign(r.rc, { virtual_hosts }));
  }
  const clusters = await slicer.entries<string, Cluster>(p.clusters);
  const endpoints = await slicer.entries<string, ClusterLoadAssignment>(p.endpoints);
  const table: ViewPart[] = [];
  for (const c of p.sidecar.parts) for (const part of await slicer.deserialize<ViewPart[]>(c)) table.push(part);
  const sidecar = new Map<string, SidecarView>();
  for (const v of p.sidecar.views) sidecar.set(v.ns, 'chunk' in v ? await slicer.deserialize<SidecarView>(v.chunk) : new PartsView(v.parts.map((i) => table[i]!)));
  return Object.assign(p.head, { routes, clusters, endpoints, sidecar });
}
