// Host names as Istio reads them: short names are completed in the namespace of the resource that
// names them, the way Kubernetes DNS search paths would (`reviews` in `default` =
// `reviews.default.svc.cluster.local`, with the cluster's DNS domain, `--cluster-domain`); names
// with a dot are taken as written.

/** The cluster's DNS domain unless `--cluster-domain` says otherwise (istiod's default domain suffix). */
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** A Kubernetes Service's host: `<name>.<namespace>.svc.<cluster domain>`. */
export function serviceHost(name: string, namespace: string, domain: string): string {
  return `${name}.${namespace}.svc.${domain}`;
}

export function completeHost(host: string, namespace: string, domain: string): string {
  const h = host.toLowerCase();
  if (h === '*' || h.includes('.')) return h;
  return serviceHost(h, namespace, domain);
}

/** The Kubernetes service name and namespace of an in-cluster FQDN, else the host and the given namespace. */
export function serviceNameAndNamespace(fqdn: string, fallbackNamespace: string, domain: string): { name: string; namespace: string } {
  const suffix = `.svc.${domain}`;
  if (fqdn.endsWith(suffix)) {
    const parts = fqdn.slice(0, -suffix.length).split('.');
    if (parts.length === 2) return { name: parts[0]!, namespace: parts[1]! };
  }
  return { name: fqdn, namespace: fallbackNamespace };
}

/** Whether a host pattern (`*`, `*.example.com` or exact) matches a concrete or wildcard name. */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1); // `.example.com`
    if (host.startsWith('*.')) return host.slice(1).endsWith(suffix);
    return host.length > suffix.length && host.endsWith(suffix);
  }
  if (host === '*') return false;
  if (host.startsWith('*.')) return false;
  return pattern === host;
}

/** Two host patterns overlap when some concrete name matches both. */
export function hostsIntersect(a: string, b: string): boolean {
  return hostMatches(a, b) || hostMatches(b, a);
}

/** RFC 1123 DNS name, optionally with a left-most `*` label, or `*` alone. */
export function isValidHostPattern(host: string): boolean {
  if (host === '*') return true;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => /^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$/.test(label));
}
