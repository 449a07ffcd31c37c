// Authority (Host / :authority) parsing shared by every engine and the request lifecycle.

/** Host without port, lower-cased; IPv6 literals keep their brackets. */
export function hostOnly(authority: string): string {
  let h = authority;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    h = end > 0 ? h.slice(0, end + 1) : h;
  } else {
    const i = h.indexOf(':');
    if (i >= 0) h = h.slice(0, i);
  }
  // Hosts are case-insensitive; most clients already send lower case.
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c >= 65 && c <= 90) return h.toLowerCase();
  }
  return h;
}

const AUTHORITY = /^(?:\[[0-9a-fA-F:.]+\]|[^\s/?#@[\]:]+)(?::\d{1,5})?$/;

export function validAuthority(host: string): boolean {
  return AUTHORITY.test(host);
}

/** The authority without its port; IPv6 literals keep their brackets, case is kept. */
export function stripPort(authority: string): string {
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    return end > 0 ? authority.slice(0, end + 1) : authority;
  }
  const i = authority.lastIndexOf(':');
  return i >= 0 ? authority.slice(0, i) : authority;
}

/** The port of an authority, undefined when it has none. */
export function portOf(authority: string): number | undefined {
  const i = authority.lastIndexOf(':');
  if (i < 0 || authority.indexOf(']', i) >= 0) return undefined;
  const n = Number(authority.slice(i + 1));
  return Number.isInteger(n) && n > 0 ? n : undefined;
}
