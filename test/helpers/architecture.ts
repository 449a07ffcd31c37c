/**
 * The checks of test/unit/architecture.test.ts over a module graph (test/helpers/imports.ts):
 * import cycles between files (Tarjan's strongly connected components) and imports between
 * folders against a layer table and an explicit allowed-edges table. Every finding has a stable
 * `id` (what an allow-list names) and a `message` that names the offending imports as
 * `file:line → target`.
 */
import type { ImportEdge } from './imports.js';

/** A folder directly under the root (`ingress`), or a file directly under it (`cli.ts`). */
export type Unit = string;

export interface Rules {
  /** Lowest first; a unit may import units of lower layers (when ALLOWED lists it), never higher ones. */
  layers: ReadonlyArray<ReadonlyArray<Unit>>;
  /** importer → imported → why. Every import between two units must be a row here. */
  allowed: Readonly<Record<Unit, Readonly<Record<Unit, string>>>>;
}

export interface Finding {
  /** `cycle: a.ts, b.ts` (sorted files of one component), `import: a.ts → b.ts`, `rule: …`. */
  id: string;
  message: string;
}

export const unitOf = (file: string): Unit => file.split('/')[0]!;

const describe = (e: ImportEdge): string => `${e.from}:${e.line} → ${e.to ?? e.specifier}${e.kind === 'static' ? '' : ` (${e.kind === 'type' ? 'import type' : 'dynamic import()'})`}`;

/** Strongly connected components of more than one file (or a file importing itself), each sorted. */
export function cycles(files: readonly string[], edges: readonly ImportEdge[]): string[][] {
  const adj = new Map<string, string[]>(files.map((f) => [f, []]));
  for (const e of edges) if (e.to !== undefined) adj.get(e.from)?.push(e.to);
  // Tarjan, iteratively (a deep import chain must not hit the call stack limit).
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let next = 0;
  for (const root of files) {
    if (index.has(root)) continue;
    const work: Array<{ v: string; i: number }> = [{ v: root, i: 0 }];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const succ = adj.get(frame.v)!;
      if (frame.i < succ.length) {
        const w = succ[frame.i++]!;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push({ v: w, i: 0 });
        } else if (onStack.has(w)) low.set(frame.v, Math.min(low.get(frame.v)!, index.get(w)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.v, Math.min(low.get(parent.v)!, low.get(frame.v)!));
      if (low.get(frame.v) === index.get(frame.v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== frame.v);
        if (comp.length > 1 || succ.includes(frame.v)) out.push(comp.sort());
      }
    }
  }
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** One shortest cycle through `start` inside `comp`, as the imports that make it. */
function shortestCycle(start: string, comp: ReadonlySet<string>, edges: readonly ImportEdge[]): ImportEdge[] {
  const out = new Map<string, ImportEdge[]>();
  for (const e of edges) if (e.to !== undefined && comp.has(e.from) && comp.has(e.to)) out.set(e.from, [...(out.get(e.from) ?? []), e]);
  const via = new Map<string, ImportEdge>();
  const queue = [start];
  for (let q = 0; q < queue.length; q++) {
    for (const e of out.get(queue[q]!) ?? []) {
      if (e.to === start) {
        const path = [e];
        for (let at = e.from; at !== start; ) {
          const step = via.get(at)!;
          path.unshift(step);
          at = step.from;
        }
        return path;
      }
      if (!via.has(e.to!)) {
        via.set(e.to!, e);
        queue.push(e.to!);
      }
    }
  }
  return [];
}

/**
 * Every import cycle, and every import between units that the rules do not allow, plus what is
 * wrong with the rules themselves (a unit in no layer, a row allowing an upward import, a cycle
 * among same-layer rows, a row no import uses any more).
 */
export function checkArchitecture(rules: Rules, files: readonly string[], edges: readonly ImportEdge[], root = 'src'): Finding[] {
  const findings: Finding[] = [];
  const inside = edges.filter((e) => e.to !== undefined);

  for (const comp of cycles(files, inside)) {
    const set = new Set(comp);
    const all = inside.filter((e) => set.has(e.from) && set.has(e.to!));
    findings.push({
      id: `cycle: ${comp.join(', ')}`,
      message:
        `import cycle between ${comp.length} files (${comp.map((f) => `${root}/${f}`).join(', ')}):\n` +
        shortestCycle(comp[0]!, set, inside).map((e) => `  ${root}/${describe(e)}`).join('\n') +
        (all.length > comp.length ? `\n  (${all.length} imports inside the cycle in all: ${all.map(describe).join('; ')})` : '') +
        '\n  Move what both need into a module below both (a type or helper file neither of them imports back).',
    });
  }

  const layerOf = new Map<Unit, number>();
  rules.layers.forEach((units, i) => units.forEach((u) => layerOf.set(u, i)));
  const layerName = (u: Unit): string => `layer ${layerOf.get(u)} (${rules.layers[layerOf.get(u)!]!.join(', ')})`;
  for (const u of new Set(files.map(unitOf))) {
    if (!layerOf.has(u)) findings.push({ id: `rule: ${u} in no layer`, message: `${root}/${u} is in no layer: add it to LAYERS (and its imports to ALLOWED_IMPORTS)` });
  }
  for (const [from, row] of Object.entries(rules.allowed)) {
    for (const to of Object.keys(row)) {
      const a = layerOf.get(from);
      const b = layerOf.get(to);
      if (a === undefined || b === undefined) findings.push({ id: `rule: ${from} → ${to} unknown`, message: `ALLOWED_IMPORTS row ${from} → ${to} names a unit that is in no layer` });
      else if (b > a) findings.push({ id: `rule: ${from} → ${to} upward`, message: `ALLOWED_IMPORTS row ${from} → ${to} allows an upward import (${from} is in ${layerName(from)}, ${to} in ${layerName(to)}): move the shared piece down instead` });
    }
  }
  // Same-layer rows must not form a cycle of folders (else the layer has no order at all).
  const sameLayer = Object.entries(rules.allowed).flatMap(([from, row]) =>
    Object.keys(row)
      .filter((to) => layerOf.get(to) !== undefined && layerOf.get(to) === layerOf.get(from))
      .map((to): ImportEdge => ({ from, to, line: 0, specifier: to, kind: 'static' })),
  );
  const units = [...layerOf.keys()];
  for (const comp of cycles(units, sameLayer)) {
    findings.push({ id: `rule: same-layer cycle ${comp.join(', ')}`, message: `ALLOWED_IMPORTS rows between ${comp.join(', ')} (one layer) form a cycle: one of them must go` });
  }

  const used = new Set<string>();
  const byPair = new Map<string, ImportEdge[]>();
  for (const e of inside) {
    const from = unitOf(e.from);
    const to = unitOf(e.to!);
    if (from === to) continue;
    used.add(`${from}\0${to}`);
    if (rules.allowed[from]?.[to] !== undefined) continue;
    const key = `${e.from}\0${e.to}`;
    byPair.set(key, [...(byPair.get(key) ?? []), e]);
  }
  for (const list of byPair.values()) {
    const e = list[0]!;
    const from = unitOf(e.from);
    const to = unitOf(e.to!);
    const a = layerOf.get(from);
    const b = layerOf.get(to);
    const why =
      a === undefined || b === undefined
        ? 'one of them is in no layer'
        : b > a
          ? `an upward import: ${from} is in ${layerName(from)}, ${to} is above it in ${layerName(to)}; move what ${from} needs down (into ${from} or a lower folder) instead`
          : b === a
            ? `${from} and ${to} are in the same layer and ALLOWED_IMPORTS has no row ${from} → ${to}: add one with the reason, if ${to} must not import ${from} back`
            : `downward, but ALLOWED_IMPORTS has no row ${from} → ${to}: add one that says why ${from} needs ${to}`;
    findings.push({ id: `import: ${e.from} → ${e.to}`, message: `${list.map((x) => `${root}/${describe(x)}`).join('\n')}\n  not allowed: ${why}` });
  }
  for (const [from, row] of Object.entries(rules.allowed)) {
    for (const to of Object.keys(row)) {
      if (!used.has(`${from}\0${to}`)) findings.push({ id: `rule: ${from} → ${to} unused`, message: `ALLOWED_IMPORTS row ${from} → ${to} ("${row[to]}"): no file of ${root}/${from} imports ${root}/${to} any more: remove the row` });
    }
  }
  return findings;
}
