// Server-name (SNI) selection as Envoy's filter_chain_match.server_names does it: an exact name
// first, then wildcards from the most specific (`*.b.example.com` before `*.example.com`, which
// also matches `a.b.example.com`), then the chain without server names.

export interface SniEntry<T> {
  /** null: no server_names (matches any name, and clients without SNI). */
  names: readonly string[] | null;
  value: T;
}

export class SniTable<T> {
  readonly #exact = new Map<string, T>();
  readonly #wildcard = new Map<string, T>();
  readonly #catchAll: T | undefined;
  readonly #first: T | undefined;

  constructor(entries: ReadonlyArray<SniEntry<T>>) {
    let catchAll: T | undefined;
    for (const e of entries) {
      if (e.names === null) {
        catchAll ??= e.value;
        continue;
      }
      for (const raw of e.names) {
        const n = raw.toLowerCase();
        const m = n.startsWith('*.') ? this.#wildcard : this.#exact;
        const key = n.startsWith('*.') ? n.slice(1) : n; // `.example.com`
        if (!m.has(key)) m.set(key, e.value);
      }
    }
    this.#catchAll = catchAll;
    this.#first = entries[0]?.value;
  }

  /** The entry for a client's server name (undefined: no SNI). */
  match(servername: string | undefined | null): T | undefined {
    if (!servername) return this.#catchAll;
    const name = servername.toLowerCase();
    const exact = this.#exact.get(name);
    if (exact !== undefined) return exact;
    for (let i = name.indexOf('.'); i >= 0; i = name.indexOf('.', i + 1)) {
      const w = this.#wildcard.get(name.slice(i));
      if (w !== undefined) return w;
    }
    return this.#catchAll;
  }

  /** What clients without SNI (or with a name no chain has) get: the catch-all, else the first. */
  get fallback(): T | undefined {
    return this.#catchAll ?? this.#first;
  }

  get exactNames(): string[] {
    return [...this.#exact.keys()];
  }
}
