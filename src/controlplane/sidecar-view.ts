// A sidecar view made of parts that many views share. The view of a namespace holds, for every
// service it sees, the listeners and route configurations of that service - the same objects in
// every namespace that sees the service alike (from another namespace, with the same mesh
// VirtualServices visible). With many namespaces (a Kubernetes cluster) the views would otherwise
// be namespaces × services objects; as parts they are services × (own namespace, others), and the
// maps of a view are built the first time something reads them (an xDS client of that namespace,
// config_dump, a test), not when the snapshot is resolved or moved between threads.
import type { ApiListener, RouteConfiguration, SidecarView } from './snapshot.js';

/** What one service brings to the views that see it alike, in map order. */
export interface ViewPart {
  readonly listeners: ReadonlyArray<readonly [string, ApiListener]>;
  readonly routes: ReadonlyArray<readonly [string, RouteConfiguration]>;
}

interface Maps {
  listeners: ReadonlyMap<string, ApiListener>;
  routes: ReadonlyMap<string, RouteConfiguration>;
}

/** Built maps, by view (views are frozen with their snapshot). */
const built = new WeakMap<PartsView, Maps>();

export class PartsView implements SidecarView {
  readonly parts: readonly ViewPart[];

  constructor(parts: readonly ViewPart[]) {
    this.parts = parts;
  }

  #maps(): Maps {
    let m = built.get(this);
    if (!m) {
      // Map.set semantics: a name two parts both bring keeps its first place and takes the last value.
      const listeners = new Map<string, ApiListener>();
      const routes = new Map<string, RouteConfiguration>();
      for (const p of this.parts) {
        for (const [k, v] of p.listeners) listeners.set(k, v);
        for (const [k, v] of p.routes) routes.set(k, v);
      }
      built.set(this, (m = { listeners, routes }));
    }
    return m;
  }

  get listeners(): ReadonlyMap<string, ApiListener> {
    return this.#maps().listeners;
  }

  get routes(): ReadonlyMap<string, RouteConfiguration> {
    return this.#maps().routes;
  }

  /** As a plain view would serialise. */
  toJSON(): Maps {
    return this.#maps();
  }
}
