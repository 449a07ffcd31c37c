// Who sees what: exportTo, label selectors, Gateway references and server host namespaces, as
// Istio scopes configuration.
/** Whether a resource in `ns` with `exportTo` is visible from namespace `to`. */
export function exportedTo(exportTo: readonly string[] | undefined, ns: string, to: string): boolean {
  if (!exportTo || exportTo.length === 0) return true;
  return exportTo.some((e) => e === '*' || (e === '.' && ns === to) || e === to);
}

/** A selector matches labels that carry all its labels (an empty selector matches everything). */
export function labelsMatch(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

/** A VirtualService's Gateway reference as `namespace/name` (or `mesh`). */
export function gatewayRef(ref: string, defaultNs: string): string {
  if (ref === 'mesh') return 'mesh';
  const i = ref.indexOf('/');
  if (i >= 0) return ref;
  // `name.namespace` is the deprecated FQDN-ish form Istio still accepts.
  const dot = ref.indexOf('.');
  if (dot > 0) return `${ref.slice(dot + 1).split('.')[0]}/${ref.slice(0, dot)}`;
  return `${defaultNs}/${ref}`;
}

/** A Gateway server host `ns/host` (`.` is the Gateway's namespace, none is any: `*`). */
export function splitServerHost(h: string, gwNs: string): { ns: string; host: string } {
  const i = h.indexOf('/');
  if (i < 0) return { ns: '*', host: h.toLowerCase() };
  const ns = h.slice(0, i);
  return { ns: ns === '.' ? gwNs : ns, host: h.slice(i + 1).toLowerCase() };
}
