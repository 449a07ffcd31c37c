/**
 * The module graph of a TypeScript source tree, for test/unit/architecture.test.ts: every static
 * `import … from`, side-effect `import '…'`, `export … from` and dynamic `import('…')` of every
 * file, with its line and whether it is type-only. TypeScript 7 has no JS compiler API, so this is
 * a small lexer of its own: it skips comments, strings, template literals and regular expression
 * literals, then reads the import and export statements from the tokens that are left.
 *
 * Type-only means what the compiler erases under `verbatimModuleSyntax` (tsconfig.json): a whole
 * `import type …` / `export type … from` statement. `import { type A } from './a.js'` is NOT
 * type-only: it is emitted as `import {} from './a.js'`, which loads (and runs) the module.
 */
import fs from 'node:fs';
import path from 'node:path';

export type ImportKind = 'static' | 'type' | 'dynamic';

export interface ImportEdge {
  /** The importing file, relative to the tree's root, with forward slashes (`ingress/exchange.ts`). */
  from: string;
  /** 1-based line of the statement's `import` / `export` keyword. */
  line: number;
  /** The specifier as written (`../config/types.js`, `node:fs`, `undici`). */
  specifier: string;
  /** The file it resolves to, relative to the root, when it is a relative import inside the tree. */
  to?: string;
  kind: ImportKind;
}

interface Token {
  /** `id` (identifier or keyword), `str` (a string literal's value), `tpl` (a template literal), `p` (punctuation). */
  t: 'id' | 'str' | 'tpl' | 'p';
  v: string;
  line: number;
}

// After one of these a `/` starts a regular expression literal, not a division.
// (After `)`, `]` and `}` it is taken for a division: `(a) / b`, `x[0] / 2`.)
const REGEX_AFTER_PUNCT = new Set(['(', ',', '=', ':', '[', '!', '&', '|', '?', '{', ';', '+', '-', '*', '%', '<', '>', '~', '^', '=>']);
const REGEX_AFTER_WORD = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await']);

/** Tokens of a TypeScript source: identifiers, string values and punctuation, with lines. */
export function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  const n = src.length;
  // Template literal nesting: for each open `${`, the brace depth at which it closes.
  const tplStack: number[] = [];
  let braces = 0;
  const prevAllowsRegex = (): boolean => {
    const last = out[out.length - 1];
    if (!last) return true;
    if (last.t === 'p') return REGEX_AFTER_PUNCT.has(last.v);
    if (last.t === 'id') return REGEX_AFTER_WORD.has(last.v);
    return false;
  };
  /** Reads a template literal's text from `i` (after the backquote or a closing `}`) to its end or to `${`. */
  const templateChunk = (): void => {
    const start = line;
    while (i < n) {
      const c = src[i]!;
      if (c === '\\') {
        if (src[i + 1] === '\n') line++;
        i += 2;
        continue;
      }
      if (c === '`') {
        i++;
        out.push({ t: 'tpl', v: '', line: start });
        return;
      }
      if (c === '$' && src[i + 1] === '{') {
        i += 2;
        tplStack.push(braces);
        braces++;
        out.push({ t: 'tpl', v: '', line: start });
        return;
      }
      if (c === '\n') line++;
      i++;
    }
  };
  while (i < n) {
    const c = src[i]!;
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '/' && src[i + 1] === '/') {
      while (i < n && src[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end < 0 ? n : end + 2;
      for (let k = i; k < stop; k++) if (src[k] === '\n') line++;
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      const start = line;
      let v = '';
      i++;
      while (i < n && src[i] !== c && src[i] !== '\n') {
        if (src[i] === '\\') {
          v += src[i + 1] ?? '';
          if (src[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        v += src[i];
        i++;
      }
      i++;
      out.push({ t: 'str', v, line: start });
      continue;
    }
    if (c === '`') {
      i++;
      templateChunk();
      continue;
    }
    if (c === '/' && prevAllowsRegex()) {
      // A regular expression literal: to the closing `/` outside a character class, on this line.
      let k = i + 1;
      let cls = false;
      while (k < n && src[k] !== '\n') {
        const d = src[k];
        if (d === '\\') {
          k += 2;
          continue;
        }
        if (d === '[') cls = true;
        else if (d === ']') cls = false;
        else if (d === '/' && !cls) break;
        k++;
      }
      i = k + 1;
      while (i < n && /[a-z]/i.test(src[i]!)) i++; // flags
      out.push({ t: 'p', v: 'regex', line });
      continue;
    }
    if (/[A-Za-z_$]/.test(c)) {
      let k = i + 1;
      while (k < n && /[\w$]/.test(src[k]!)) k++;
      out.push({ t: 'id', v: src.slice(i, k), line });
      i = k;
      continue;
    }
    if (/[0-9]/.test(c)) {
      let k = i + 1;
      while (k < n && /[\w.]/.test(src[k]!)) k++;
      out.push({ t: 'id', v: src.slice(i, k), line }); // a number: only its "not punctuation" matters
      i = k;
      continue;
    }
    if (c === '{') {
      braces++;
      out.push({ t: 'p', v: c, line });
      i++;
      continue;
    }
    if (c === '}') {
      braces--;
      if (tplStack.length > 0 && tplStack[tplStack.length - 1] === braces) {
        tplStack.pop();
        i++;
        templateChunk();
        continue;
      }
      out.push({ t: 'p', v: c, line });
      i++;
      continue;
    }
    if (c === '=' && src[i + 1] === '>') {
      out.push({ t: 'p', v: '=>', line });
      i += 2;
      continue;
    }
    if (c === '.' && src[i + 1] === '.' && src[i + 2] === '.') {
      out.push({ t: 'p', v: '...', line });
      i += 3;
      continue;
    }
    out.push({ t: 'p', v: c, line });
    i++;
  }
  return out;
}

/** The import and export-from statements of one source text (`to` not yet resolved). */
export function parseImports(src: string, from: string): ImportEdge[] {
  const toks = tokenize(src);
  const edges: ImportEdge[] = [];
  const at = (k: number): Token | undefined => toks[k];
  for (let k = 0; k < toks.length; k++) {
    const tok = toks[k]!;
    if (tok.t !== 'id' || (tok.v !== 'import' && tok.v !== 'export')) continue;
    const prev = at(k - 1);
    if (prev && prev.t === 'p' && (prev.v === '.' || prev.v === '?')) continue; // x.import, x?.import
    const next = at(k + 1);
    if (!next) continue;
    if (tok.v === 'import') {
      if (next.t === 'p' && next.v === '(') {
        // Dynamic import('…'): only a plain string specifier names a module. `typeof import('…')`
        // is a type, erased like `import type`.
        const spec = at(k + 2);
        if (spec?.t === 'str' && at(k + 3)?.t === 'p' && (at(k + 3)!.v === ')' || at(k + 3)!.v === ',')) {
          const isType = prev?.t === 'id' && prev.v === 'typeof';
          edges.push({ from, line: tok.line, specifier: spec.v, kind: isType ? 'type' : 'dynamic' });
        }
        continue;
      }
      if (next.t === 'p' && next.v === '.') continue; // import.meta
      if (next.t === 'str') {
        edges.push({ from, line: tok.line, specifier: next.v, kind: 'static' }); // side effects only
        continue;
      }
      // import [type] <bindings> from '…' (bindings: default, { … }, * as ns, or default + one of them).
      const typeOnly = next.t === 'id' && next.v === 'type' && !(at(k + 2)?.t === 'id' && at(k + 2)!.v === 'from' && at(k + 3)?.t === 'str');
      const spec = findFrom(toks, k + 1);
      if (spec) edges.push({ from, line: tok.line, specifier: spec.v, kind: typeOnly ? 'type' : 'static' });
      continue;
    }
    // export … from '…' (export *, export * as ns, export { … }, export type { … }, export type * …).
    let j = k + 1;
    let typeOnly = false;
    if (next.t === 'id' && next.v === 'type') {
      typeOnly = true;
      j++;
    }
    const first = at(j);
    if (!first || first.t !== 'p' || (first.v !== '*' && first.v !== '{')) continue; // export const/function/default …
    const spec = findFrom(toks, j);
    if (spec) edges.push({ from, line: tok.line, specifier: spec.v, kind: typeOnly ? 'type' : 'static' });
  }
  return edges;
}

/**
 * From the start of an import/export clause, the string after its `from`, or undefined when the
 * statement ends first (an `export { a }` without `from`).
 */
function findFrom(toks: Token[], k: number): Token | undefined {
  let depth = 0;
  for (let j = k; j < toks.length; j++) {
    const t = toks[j]!;
    if (t.t === 'p') {
      if (t.v === '{') depth++;
      else if (t.v === '}') depth--;
      else if (t.v === ';' && depth === 0) return undefined;
      else if (t.v === '=' && depth === 0) return undefined; // import x = require(…)
      continue;
    }
    if (depth === 0 && t.t === 'id' && t.v === 'from') {
      const s = toks[j + 1];
      return s?.t === 'str' ? s : undefined;
    }
    if (depth === 0 && t.t === 'id' && (t.v === 'import' || t.v === 'export' || t.v === 'const' || t.v === 'function')) return undefined;
  }
  return undefined;
}

/** Every `.ts` file under `root` (not `.d.ts`), relative, with forward slashes, sorted. */
export function sourceFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(path.relative(root, p).split(path.sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

/**
 * The import graph of every source file under `root`: relative specifiers are resolved the
 * NodeNext way the sources write them (`./x.js` → `x.ts`, `./dir/index.js` → `dir/index.ts`).
 * A relative import that names no file under `root` throws: a graph with holes would hide edges.
 */
export function importGraph(root: string): { files: string[]; edges: ImportEdge[] } {
  const files = sourceFiles(root);
  const known = new Set(files);
  const edges: ImportEdge[] = [];
  for (const file of files) {
    for (const e of parseImports(fs.readFileSync(path.join(root, file), 'utf8'), file)) {
      if (e.specifier.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), e.specifier));
        const candidates = [target.replace(/\.js$/, '.ts'), target.replace(/\.mjs$/, '.mts'), `${target}.ts`, `${target}/index.ts`, target];
        const to = candidates.find((c) => known.has(c));
        if (!to) throw new Error(`${file}:${e.line}: import '${e.specifier}' names no source file under ${root}`);
        edges.push({ ...e, to });
      } else edges.push(e);
    }
  }
  return { files, edges };
}
