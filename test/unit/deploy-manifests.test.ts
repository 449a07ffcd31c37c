// deploy/: the Kustomize base, the ingress and egress overlays, the optional components and the
// mesh config example. Every variant is rendered by `kubectl kustomize` (as `kubectl apply -k` would
// apply it), every rendered object is checked against the Kubernetes API schemas (a typo fails),
// and the properties a gateway in a cluster depends on are asserted on the rendered output.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SHUTDOWN_DRAIN_MS } from '../../src/gateway.js';
import { loadCheckedConfig } from '../../src/workers/config-job.js';
import { kustomize, kustomizeWith, objectName, REPO_DIR, requireKubectl, schemaProblems, type KubeObject } from '../helpers/kube-manifests.js';

// Rendered objects are read by path (their shape is what the schema test checks).
type Json = Record<string, any>;

const OVERLAYS = {
  ingress: { dir: 'overlays/ingress', namespace: 'gatehouse-ingress', istio: 'ingressgateway', serviceType: 'LoadBalancer' },
  egress: { dir: 'overlays/egress', namespace: 'gatehouse-egress', istio: 'egressgateway', serviceType: 'ClusterIP' },
} as const;
type OverlayName = keyof typeof OVERLAYS;

const VARIANTS = ['ingress', 'egress', 'ingress+write-status', 'egress+write-status', 'ingress+external-traffic-local', 'mesh-config'];
const renders = new Map<string, KubeObject[]>();
let renderError: Error | undefined;
/** A rendered variant; without kubectl (or with one too old) every test fails with what to install. */
const rendered = (name: string): KubeObject[] => {
  if (renderError) throw renderError;
  const r = renders.get(name);
  if (!r) throw new Error(`${name} was not rendered`);
  return r;
};

beforeAll(() => {
  try {
    requireKubectl();
    renders.set('ingress', kustomize(join(REPO_DIR, 'deploy/overlays/ingress')));
    renders.set('egress', kustomize(join(REPO_DIR, 'deploy/overlays/egress')));
    renders.set('ingress+write-status', kustomizeWith('overlays/ingress', ['components/write-status']));
    renders.set('egress+write-status', kustomizeWith('overlays/egress', ['components/write-status']));
    renders.set('ingress+external-traffic-local', kustomizeWith('overlays/ingress', ['components/external-traffic-local']));
    renders.set('mesh-config', kustomize(join(REPO_DIR, 'deploy/mesh-config')));
  } catch (e) {
    renderError = e as Error;
  }
}, 120_000);

function all(objects: readonly KubeObject[], kind: string): Json[] {
  return objects.filter((o) => o.kind === kind) as Json[];
}
function one(objects: readonly KubeObject[], kind: string): Json {
  const found = all(objects, kind);
  expect(found.map((o) => o.metadata.name), `exactly one ${kind}`).toHaveLength(1);
  return found[0]!;
}
function gatehouseContainer(dep: Json): Json {
  const c = (dep.spec.template.spec.containers as Json[]).find((x) => x.name === 'gatehouse');
  expect(c, 'a container named gatehouse').toBeDefined();
  return c!;
}

/** A Kubernetes CPU quantity in cores ("2", "1.5", "500m"). */
function cores(q: string | number): number {
  const s = String(q);
  return s.endsWith('m') ? Number(s.slice(0, -1)) / 1000 : Number(s);
}

/**
 * The container's args as the kubelet runs them: `$(VAR)` replaced from the container's env, with
 * the downward API's values (metadata.namespace; a resource field in units of its divisor, rounded
 * up, as the kubelet does).
 */
function expandedArgs(dep: Json, c: Json): string[] {
  const env = new Map<string, string>();
  for (const e of (c.env ?? []) as Json[]) {
    if (e.value !== undefined) env.set(e.name, String(e.value));
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') env.set(e.name, dep.metadata.namespace);
    else if (e.valueFrom?.resourceFieldRef) {
      const ref = e.valueFrom.resourceFieldRef;
      const target = ref.containerName ? (dep.spec.template.spec.containers as Json[]).find((x) => x.name === ref.containerName) : c;
      const [kind, resource] = String(ref.resource).split('.') as ['limits' | 'requests', string];
      const quantity = target?.resources?.[kind]?.[resource];
      if (quantity !== undefined && resource === 'cpu') env.set(e.name, String(Math.ceil(cores(quantity) / cores(ref.divisor ?? '1'))));
    }
  }
  return (c.args as string[]).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => env.get(name) ?? m));
}

/** `--flag=value` or `--flag value`; every occurrence. */
function flagValues(args: readonly string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a.startsWith(`--${flag}=`)) out.push(a.slice(flag.length + 3));
    else if (a === `--${flag}` && i + 1 < args.length) out.push(args[i + 1]!);
  });
  return out;
}

function containerPort(c: Json, ref: string | number): number | undefined {
  if (typeof ref === 'number') return ref;
  return (c.ports as Json[]).find((p) => p.name === ref)?.containerPort;
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
}

describe('deploy/ renders with kubectl kustomize and every object is a valid Kubernetes object', () => {
  it('renders the ingress and egress overlays, the optional components and the mesh config example', () => {
    for (const name of ['ingress', 'egress', 'ingress+write-status', 'egress+write-status', 'ingress+external-traffic-local']) {
      const kinds = new Set(rendered(name).map((o) => o.kind));
      for (const k of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Lease', 'Secret', 'Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget']) {
        expect(kinds.has(k), `${name} renders a ${k}`).toBe(true);
      }
    }
    expect(rendered('mesh-config').map(objectName)).toEqual(['ConfigMap/istio-system/istio']);
  });

  it('validates every rendered object against the Kubernetes schemas, unknown fields included', async () => {
    const variantOf = new Map<KubeObject, string>();
    for (const v of VARIANTS) for (const o of rendered(v)) variantOf.set(o, v);
    expect(variantOf.size).toBeGreaterThan(0);
    expect(await schemaProblems([...variantOf.keys()], (o) => `${variantOf.get(o)}: ${objectName(o)}`)).toEqual([]);
  }, 120_000);

  it('the schema check fails on a misspelt field, a wrong type, a bad enum value and an unknown spec field', async () => {
    const dep = structuredClone(one(rendered('ingress'), 'Deployment')) as KubeObject & Json;
    dep.spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem = true; // typo
    const svc = structuredClone(one(rendered('ingress'), 'Service')) as KubeObject & Json;
    svc.spec.ports[0].port = '80'; // a string where an int32 is due
    svc.spec.type = 'Loadbalancer';
    const hpa = structuredClone(one(rendered('egress'), 'HorizontalPodAutoscaler')) as KubeObject & Json;
    hpa.spec.minReplica = 2; // typo at spec level
    const problems = await schemaProblems([dep, svc, hpa]);
    const at = (obj: KubeObject, path: string): string[] => problems.filter((p) => p.startsWith(`${objectName(obj)}: ${path}: `));
    expect(at(dep, 'spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem').join('\n')).toMatch(/does not exist in type/);
    expect(at(svc, 'spec.ports[0].port').length).toBeGreaterThan(0);
    expect(at(svc, 'spec.type').join('\n')).toMatch(/allowed values/);
    expect(at(hpa, 'spec.minReplica').join('\n')).toMatch(/does not exist in type/);
  }, 120_000);
});

describe.each(Object.keys(OVERLAYS) as OverlayName[])('the %s overlay', (name) => {
  const spec = OVERLAYS[name];
  const objects = (): KubeObject[] => rendered(name);

  it('puts every namespaced object in its own namespace, which enforces the restricted Pod Security level', () => {
    const ns = one(objects(), 'Namespace');
    expect(ns.metadata.name).toBe(spec.namespace);
    expect(ns.metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
    for (const o of objects()) {
      if (clusterScoped.has(o.kind)) expect(o.metadata.namespace, objectName(o)).toBeUndefined();
      else expect(o.metadata.namespace, objectName(o)).toBe(spec.namespace);
    }
    // Cluster-scoped names carry the overlay's name, so that both gateways can be installed.
    for (const o of objects().filter((x) => x.kind.startsWith('Cluster'))) expect(o.metadata.name).toBe(`gatehouse-${name}`);
  });

  it('runs `gatehouse run --kubernetes` with the workload labels its pods carry and its own namespace', () => {
    const dep = one(objects(), 'Deployment');
    const c = gatehouseContainer(dep);
    expect(c.command, 'the image ENTRYPOINT (node /app/dist/cli.js) runs').toBeUndefined();
    const args = expandedArgs(dep, c);
    expect(args.slice(0, 1)).toEqual(['run']);
    expect(args).toContain('--kubernetes');
    expect(flagValues(args, 'config'), 'no ConfigMap of Istio YAML: the API is the source').toEqual([]);
    expect(flagValues(args, 'namespace')).toEqual([spec.namespace]);
    const podLabels = dep.spec.template.metadata.labels as Record<string, string>;
    expect(podLabels.istio).toBe(spec.istio);
    expect(podLabels.app).toBe(`gatehouse-${name}`);
    const labels = flagValues(args, 'labels');
    expect(labels).toHaveLength(1);
    const given = Object.fromEntries(labels[0]!.split(',').map((kv) => kv.split('=') as [string, string]));
    expect(given).toEqual({ app: podLabels.app, istio: podLabels.istio });
    // Not meshed itself: no Istio sidecar or ambient redirection in front of the gateway.
    expect(podLabels['sidecar.istio.io/inject']).toBe('false');
  });

  it('runs as non-root on a read-only root filesystem, every capability dropped, seccomp RuntimeDefault', () => {
    const dep = one(objects(), 'Deployment');
    const pod = dep.spec.template.spec;
    const c = gatehouseContainer(dep);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.privileged ?? false).toBe(false);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    // Ports below 1024 are bound through the namespaced sysctl, so nothing is added back.
    const low = (c.ports as Json[]).some((p) => p.containerPort < 1024);
    const sysctl = (pod.securityContext.sysctls ?? []).find((s: Json) => s.name === 'net.ipv4.ip_unprivileged_port_start');
    if (low) expect(sysctl?.value, 'ports < 1024 need ip_unprivileged_port_start=0').toBe('0');
    expect(c.securityContext.capabilities.add ?? []).toEqual([]);
    // What it writes goes to emptyDirs: the state dir and /tmp (certificate files for uWS).
    const stateDir = (c.env as Json[]).find((e) => e.name === 'GATEHOUSE_STATE_DIR')?.value;
    expect(stateDir).toBeTruthy();
    const emptyDirs = new Set((pod.volumes as Json[]).filter((v) => v.emptyDir).map((v) => v.name));
    const mounts = new Map((c.volumeMounts as Json[]).map((m) => [m.mountPath, m.name]));
    for (const path of [stateDir, '/tmp']) expect(emptyDirs.has(mounts.get(path)), `${path} is an emptyDir`).toBe(true);
    // Requests and limits are set, memory included.
    for (const k of ['requests', 'limits']) for (const r of ['cpu', 'memory']) expect(c.resources[k][r], `${k}.${r}`).toBeDefined();
  });

  it('is ready on /healthz/ready of the admin port, bound where the kubelet reaches it, and live on TCP', () => {
    const dep = one(objects(), 'Deployment');
    const c = gatehouseContainer(dep);
    const args = expandedArgs(dep, c);
    const adminPort = Number(flagValues(args, 'admin-port')[0] ?? 15000);
    expect(flagValues(args, 'admin-bind')).toEqual(['0.0.0.0']);
    expect(c.readinessProbe.httpGet.path).toBe('/healthz/ready');
    expect(containerPort(c, c.readinessProbe.httpGet.port)).toBe(adminPort);
    // Liveness must not follow readiness (503 during the first sync and while draining).
    expect(c.livenessProbe.httpGet?.path).not.toBe('/healthz/ready');
    expect(containerPort(c, c.livenessProbe.tcpSocket.port)).toBe(adminPort);
    // Metrics are scraped from the admin port.
    const ann = dep.spec.template.metadata.annotations;
    expect([Number(ann['prometheus.io/port']), ann['prometheus.io/path']]).toEqual([adminPort, '/stats/prometheus']);
  });

  it('runs as many data-plane workers as its CPU limit has cores', () => {
    const dep = one(objects(), 'Deployment');
    const c = gatehouseContainer(dep);
    const limit = cores(c.resources.limits.cpu);
    expect(Number.isInteger(limit), `limits.cpu ${c.resources.limits.cpu} is whole cores`).toBe(true);
    expect(flagValues(expandedArgs(dep, c), 'workers')).toEqual([String(limit)]);
  });

  it('drains: a preStop sleep while the load balancer lets go, then Gatehouse\'s drain, within the grace period', () => {
    const dep = one(objects(), 'Deployment');
    const c = gatehouseContainer(dep);
    const command = c.lifecycle.preStop.exec.command as string[];
    expect(command[0]).toBe('sleep');
    const sleep = Number(command[1]);
    expect(sleep).toBeGreaterThanOrEqual(5);
    expect(dep.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(sleep + SHUTDOWN_DRAIN_MS / 1000 + 5);
  });

  it('has least-privilege RBAC: read-only, but for its own ACME Lease and Secret, bound to its own ServiceAccount', () => {
    const objs = objects();
    const dep = one(objs, 'Deployment');
    const sa = one(objs, 'ServiceAccount');
    expect(dep.spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    const bindings = [...all(objs, 'ClusterRoleBinding'), ...all(objs, 'RoleBinding')];
    expect(bindings.length).toBeGreaterThan(0);
    for (const b of bindings) {
      expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: spec.namespace }]);
      const role = objs.find((o) => o.kind === b.roleRef.kind && o.metadata.name === b.roleRef.name);
      expect(role, `${objectName(b as KubeObject)} refers to a rendered ${b.roleRef.kind}`).toBeDefined();
    }
    const read = ['get', 'list', 'watch'];
    for (const rule of one(objs, 'ClusterRole').rules as Json[]) {
      expect(rule.verbs.every((v: string) => read.includes(v)), `read-only: ${JSON.stringify(rule)}`).toBe(true);
      expect([...rule.apiGroups, ...rule.resources]).not.toContain('*');
    }
    const watched = (one(objs, 'ClusterRole').rules as Json[]).flatMap((r) => r.apiGroups.flatMap((g: string) => r.resources.map((res: string) => `${g}/${res}`)));
    for (const need of ['networking.istio.io/virtualservices', 'networking.istio.io/gateways', 'security.istio.io/authorizationpolicies', '/secrets', '/configmaps', '/services', '/pods', 'discovery.k8s.io/endpointslices']) {
      expect(watched, `reads ${need}`).toContain(need);
    }
    // The namespaced Role: update on exactly the ACME Lease and Secret, which the package creates
    // (so no `create`), nothing else.
    const role = one(objs, 'Role');
    for (const rule of role.rules as Json[]) {
      expect(rule.resourceNames).toEqual(['gatehouse-acme']);
      expect(['coordination.k8s.io/leases', '/secrets']).toContain(`${rule.apiGroups.join()}/${rule.resources.join()}`);
      // What the gateway does with them (src/tls/acme-lease.ts): get, watch by name, update.
      expect([...rule.verbs].sort(), JSON.stringify(rule)).toEqual(['get', 'update', 'watch']);
    }
    expect((role.rules as Json[]).map((r) => `${r.apiGroups.join()}/${r.resources.join()}`).sort()).toEqual(['/secrets', 'coordination.k8s.io/leases']);
    // Each replica is named in the Lease by its pod's name.
    const podName = (gatehouseContainer(dep).env as Json[]).find((e) => e.name === 'POD_NAME');
    expect(podName?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    expect(objs.filter((o) => o.metadata.name === 'gatehouse-acme' && (o.kind === 'Lease' || o.kind === 'Secret')).map((o) => o.kind).sort()).toEqual(['Lease', 'Secret']);
    // No verb anywhere creates, deletes or escalates.
    const verbs = [...all(objs, 'ClusterRole'), ...all(objs, 'Role')].flatMap((r) => (r.rules as Json[]).flatMap((x) => x.verbs as string[]));
    for (const v of ['create', 'delete', 'deletecollection', '*', 'escalate', 'bind', 'impersonate']) expect(verbs).not.toContain(v);
  });

  it(`exposes the Gateway ports through a ${spec.serviceType} Service, never the admin port`, () => {
    const objs = objects();
    const dep = one(objs, 'Deployment');
    const c = gatehouseContainer(dep);
    const svc = one(objs, 'Service');
    const podLabels = dep.spec.template.metadata.labels;
    expect(svc.spec.type).toBe(spec.serviceType);
    expect(svc.spec.externalTrafficPolicy).toBeUndefined();
    expect(selects(svc.spec.selector, podLabels)).toBe(true);
    expect(svc.spec.selector.istio).toBe(spec.istio);
    const targets = (svc.spec.ports as Json[]).map((p) => containerPort(c, p.targetPort));
    expect(targets).toEqual([80, 443]);
    expect(targets).not.toContain(Number(flagValues(expandedArgs(dep, c), 'admin-port')[0]));
  });

  it('scales with an HPA on CPU (the Deployment leaves replicas to it) and keeps one pod through disruptions', () => {
    const objs = objects();
    const dep = one(objs, 'Deployment');
    const podLabels = dep.spec.template.metadata.labels;
    expect(selects(dep.spec.selector.matchLabels, podLabels)).toBe(true);
    expect(dep.spec.replicas, 'a fixed replica count would fight the HPA on every apply').toBeUndefined();
    const hpa = one(objs, 'HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.metrics.map((m: Json) => m.resource?.name)).toEqual(['cpu']);
    const pdb = one(objs, 'PodDisruptionBudget');
    expect(pdb.apiVersion).toBe('policy/v1');
    expect(pdb.spec.minAvailable).toBe(1);
    expect(selects(pdb.spec.selector.matchLabels, podLabels)).toBe(true);
    expect(hpa.spec.minReplicas).toBeGreaterThan(pdb.spec.minAvailable);
    // Replicas spread over zones and nodes, selecting this gateway's pods.
    const spread = dep.spec.template.spec.topologySpreadConstraints as Json[];
    expect(spread.map((s) => s.topologyKey).sort()).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
    for (const s of spread) expect(selects(s.labelSelector.matchLabels, podLabels)).toBe(true);
  });

  it(name === 'egress' ? 'has a NetworkPolicy: labelled clients in, only DNS, the API server and external 80/443 out' : 'has no NetworkPolicy', () => {
    const objs = objects();
    const nps = all(objs, 'NetworkPolicy');
    if (name !== 'egress') {
      expect(nps).toEqual([]);
      return;
    }
    const np = one(objs, 'NetworkPolicy');
    const podLabels = one(objs, 'Deployment').spec.template.metadata.labels;
    expect(selects(np.spec.podSelector.matchLabels, podLabels)).toBe(true);
    expect([...np.spec.policyTypes].sort()).toEqual(['Egress', 'Ingress']);
    const peers = (rules: Json[], side: 'from' | 'to'): Json[] => rules.flatMap((r) => (r[side] ?? []) as Json[]);
    for (const rule of [...np.spec.ingress, ...np.spec.egress] as Json[]) {
      expect((rule.from ?? rule.to ?? []).length, `no rule admits every peer: ${JSON.stringify(rule)}`).toBeGreaterThan(0);
      expect((rule.ports ?? []).length, `no rule admits every port: ${JSON.stringify(rule)}`).toBeGreaterThan(0);
    }
    // No peer selects pods by the gateway's own labels (what kustomize's `labels` would do to matchLabels).
    for (const p of [...peers(np.spec.ingress, 'from'), ...peers(np.spec.egress, 'to')]) {
      expect(p.podSelector?.matchLabels?.istio, JSON.stringify(p)).toBeUndefined();
      expect(p.podSelector?.matchLabels?.app, JSON.stringify(p)).toBeUndefined();
    }
    const ingressPorts = new Set((np.spec.ingress as Json[]).flatMap((r) => (r.ports as Json[]).map((p) => p.port)));
    expect([...ingressPorts].sort((a, b) => a - b)).toEqual([80, 443, 15000]);
    const egressPorts = new Set((np.spec.egress as Json[]).flatMap((r) => (r.ports as Json[]).map((p) => p.port)));
    expect([...egressPorts].sort((a, b) => a - b)).toEqual([53, 80, 443, 6443]);
    // Port 80 leaves only to external addresses: not the cloud metadata endpoint, not private ranges.
    for (const rule of (np.spec.egress as Json[]).filter((r) => (r.ports as Json[]).some((p) => p.port === 80))) {
      for (const p of rule.to as Json[]) {
        if (p.ipBlock.cidr === '0.0.0.0/0') expect(p.ipBlock.except).toEqual(expect.arrayContaining(['169.254.0.0/16', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']));
      }
    }
  });
});

describe('optional components', () => {
  it.each(['ingress', 'egress'] as const)('write-status adds --write-status and update of the Istio kinds\' status subresource only (%s)', (name) => {
    const base = rendered(name);
    const objs = rendered(`${name}+write-status`);
    const args = gatehouseContainer(one(objs, 'Deployment')).args as string[];
    expect(args).toContain('--write-status');
    expect(gatehouseContainer(one(base, 'Deployment')).args).not.toContain('--write-status');
    const before = one(base, 'ClusterRole').rules as Json[];
    const after = one(objs, 'ClusterRole').rules as Json[];
    expect(after.slice(0, before.length)).toEqual(before);
    const added = after.slice(before.length);
    expect(added.length).toBeGreaterThan(0);
    const statuses = added.flatMap((r) => r.resources as string[]);
    expect(statuses).toEqual(expect.arrayContaining(['virtualservices/status', 'gateways/status', 'destinationrules/status', 'authorizationpolicies/status']));
    for (const r of added) {
      expect((r.resources as string[]).every((x) => x.endsWith('/status')), JSON.stringify(r)).toBe(true);
      expect([...r.verbs].sort()).toEqual(['patch', 'update']);
      expect((r.apiGroups as string[]).every((g) => g.endsWith('.istio.io'))).toBe(true);
    }
    // Nothing else changes.
    const others = (o: KubeObject[]): unknown[] => o.filter((x) => x.kind !== 'ClusterRole' && x.kind !== 'Deployment');
    expect(others(objs)).toEqual(others(base));
  });

  it('external-traffic-local keeps client addresses (Local) and lengthens the preStop sleep and the grace period with it', () => {
    const base = one(rendered('ingress'), 'Deployment');
    const objs = rendered('ingress+external-traffic-local');
    const svc = one(objs, 'Service');
    expect(svc.spec.type).toBe('LoadBalancer');
    expect(svc.spec.externalTrafficPolicy).toBe('Local');
    const dep = one(objs, 'Deployment');
    const sleep = Number(gatehouseContainer(dep).lifecycle.preStop.exec.command[1]);
    expect(sleep).toBeGreaterThan(Number(gatehouseContainer(base).lifecycle.preStop.exec.command[1]));
    expect(dep.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(sleep + SHUTDOWN_DRAIN_MS / 1000 + 5);
  });
});

describe('the rest of deploy/ agrees with the product', () => {
  it('the mesh config example is a ConfigMap `istio` that Gatehouse reads without a problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-mesh-'));
    try {
      const file = join(dir, 'istio.yaml');
      writeFileSync(file, stringify(rendered('mesh-config')[0]));
      const r = loadCheckedConfig({ paths: [file], namespace: 'gatehouse-ingress', labels: { istio: 'ingressgateway' } });
      expect(r.problems).toEqual([]);
      expect(r.checkable.mesh).toMatchObject({ rootNamespace: 'istio-system', accessLogFile: '/dev/stdout', accessLogEncoding: 'JSON' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the image tag is the package version', () => {
    const pkg = JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')) as { version: string };
    for (const name of Object.keys(OVERLAYS)) {
      expect(gatehouseContainer(one(rendered(name), 'Deployment')).image).toBe(`gatehouse:${pkg.version}`);
    }
  });

  it('the Dockerfile agrees with the Deployment: user, state folder, ports, entrypoint', () => {
    const dockerfile = readFileSync(join(REPO_DIR, 'Dockerfile'), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const last = (re: RegExp): string | undefined => [...runtime.matchAll(re)].at(-1)?.[1];
    const dep = one(rendered('ingress'), 'Deployment');
    const pod = dep.spec.template.spec;
    const c = gatehouseContainer(dep);
    expect(last(/^USER\s+(\S+)/gm)).toBe(`${pod.securityContext.runAsUser}:${pod.securityContext.runAsGroup}`);
    const stateDir = (c.env as Json[]).find((e) => e.name === 'GATEHOUSE_STATE_DIR')?.value;
    expect(last(/^ENV\s+GATEHOUSE_STATE_DIR=(\S+)/gm)).toBe(stateDir);
    const exposed = (last(/^EXPOSE\s+(.+)$/gm) ?? '').split(/\s+/).map(Number);
    for (const p of c.ports as Json[]) expect(exposed, `EXPOSE ${p.containerPort}`).toContain(p.containerPort);
    expect(last(/^ENTRYPOINT\s+(.+)$/gm)).toBe('["node", "/app/dist/cli.js"]');
  });
});
