// Field paths of Istio's current API, read from `@kubernetes-models/istio` (generated from Istio's
// CRDs): its .d.ts files declare every field of every kind, with its type. Used by the conformance
// test to check that Gatehouse's schema knows every field (honoured, or warned as ignored).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ISTIO_MODELS_DIR = fileURLToPath(new URL('../../node_modules/@kubernetes-models/istio/', import.meta.url));

/** One field: its path under the document root (`spec.servers[].port.number`, `[]` = list item, `*` = map value) and its declared TypeScript type (`object` for a nested message). */
export interface ApiField {
  path: string[];
  type: string;
}

const PROPERTY = /^\s*(?:"([^"]+)"|\[key: string\])\??:\s*(.*)$/;

/**
 * Every field path declared by one generated `.d.ts` (e.g. `networking.istio.io/v1/Gateway.d.ts`).
 * The files are regular: one property per line, nested messages open `{` at the end of their line,
 * and oneof alternatives (`} & ({`, `} | {`, `}, {` of `Exclude<...>`) reopen the same message.
 */
export function apiFields(dts: string): ApiField[] {
  const byPath = new Map<string, ApiField>();
  const stack: string[][] = [];
  let lastPopped: string[] = [];
  let inComment = false;
  for (const raw of dts.split('\n')) {
    const line = raw.trim();
    if (inComment) {
      if (line.includes('*/')) inComment = false;
      continue;
    }
    if (line.startsWith('/*')) {
      inComment = !line.includes('*/');
      continue;
    }
    if (line.startsWith('import ') || line.startsWith('export declare') || line.startsWith('export {')) continue;
    if (line.startsWith('export interface')) {
      stack.push([]);
      continue;
    }
    const m = PROPERTY.exec(line);
    let rest = line;
    let pending: string[] | undefined;
    if (m && stack.length > 0) {
      const name = m[1] ?? '*';
      rest = m[2]!;
      const firstBrace = rest.indexOf('{');
      const before = firstBrace < 0 ? rest : rest.slice(0, firstBrace);
      const arrays = (before.match(/Array</g) ?? []).length;
      const path = [...stack[stack.length - 1]!, name, ...Array<string>(arrays).fill('[]')];
      const opens = firstBrace >= 0 && !/^\{\s*\}/.test(rest.slice(firstBrace));
      const key = path.join('.');
      let type = rest.replace(/;$/, '');
      for (let i = 0; i < arrays; i++) type = type.replace(/^Array<(.*)>$/, '$1');
      if (!byPath.has(key)) byPath.set(key, { path, type: opens ? 'object' : type });
      pending = path;
    }
    for (const ch of rest) {
      if (ch === '{') {
        stack.push(pending ?? lastPopped);
        pending = undefined;
      } else if (ch === '}') {
        lastPopped = stack.pop() ?? [];
      }
    }
  }
  return [...byPath.values()];
}

/** The fields under `spec` of one kind at one API version. */
export function specFields(group: string, version: string, kind: string): ApiField[] {
  const dts = readFileSync(`${ISTIO_MODELS_DIR}${group}/${version}/${kind}.d.ts`, 'utf8');
  return apiFields(dts).filter((f) => f.path[0] === 'spec' && f.path.length > 1);
}
