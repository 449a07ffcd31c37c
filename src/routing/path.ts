// Istio's default path normalization (meshConfig pathNormalization BASE = Envoy normalize_path):
// RFC 3986 dot-segment removal before routing and forwarding, so `/public/../admin` cannot slip
// past a route meant for `/admin`. Percent-encoded dots (`%2e`) count as dots, as in Envoy.

function dotKind(seg: string): 0 | 1 | 2 {
  if (seg === '.') return 1;
  if (seg === '..') return 2;
  if (seg.length !== 3 && seg.length !== 4 && seg.length !== 6) return 0;
  const d = seg.replace(/%2e/gi, '.');
  return d === '.' ? 1 : d === '..' ? 2 : 0;
}

/** The path with `.` and `..` segments resolved; unchanged (same string) when it has none. */
export function normalizePath(path: string): string {
  if (path.indexOf('/.') < 0 && path.indexOf('%2') < 0) return path;
  if (!/\/(?:\.|%2e)/i.test(path)) return path;
  const segs = path.split('/');
  const out: string[] = [];
  const last = segs.length - 1;
  for (let i = 1; i <= last; i++) {
    const s = segs[i]!;
    const kind = dotKind(s);
    if (kind === 0) {
      out.push(s);
      continue;
    }
    if (kind === 2) out.pop();
    if (i === last) out.push(''); // `/a/b/..` is `/a/`: the result names a directory
  }
  return `/${out.join('/')}`;
}
