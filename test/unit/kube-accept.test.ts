// Objects from the Kubernetes API are accepted one by one (src/config/kubernetes/accept.ts), with
// the job's real checks (validation, certificates) as `gatehouse run --kubernetes` runs them.
import { describe, expect, it } from 'vitest';
import { acceptObjects, credentialCulprits, referencedSecrets, type AcceptResult } from '../../src/config/kubernetes/accept.js';
import { trimObject, type StoredObject } from '../../src/config/kubernetes/objects.js';
import { formatProblem, type Problem, type Resource } from '../../src/config/types.js';
import { validate } from '../../src/config/validate.js';
import { checkCertificates } from '../../src/tls/check.js';
import { parseYamlText } from '../../src/config/load.js';
import { createCa } from '../helpers/openssl-ca.js';
import { dest, gateway, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let rv = 1;
/** An object as the API serves it, kept as the source keeps it. */
function obj(o: Obj): StoredObject {
  const meta = { namespace: 'default', ...(o.metadata as Obj), resourceVersion: String(++rv), creationTimestamp: `2026-01-01T00:00:${String(rv % 60).padStart(2, '0')}Z` };
  return trimObject(o.kind as string, o.apiVersion as string, { ...o, metadata: meta } as never);
}

const check = (set: readonly Resource[]): Problem[] => {
  const v = validate(set, { gatewayNamespace: 'istio-system', labels: { istio: 'ingressgateway' }, rootNamespace: 'istio-system' });
  return [...v.problems, ...checkCertificates(v.checkable, { namespace: 'istio-system', labels: { istio: 'ingressgateway' } })];
};

function run(objects: StoredObject[], lastGood: StoredObject[] = [], files: Resource[] = []): AcceptResult {
  return acceptObjects({ files, objects, lastGood: new Map(lastGood.map((o) => [o.id, o])), check, culprits: credentialCulprits('istio-system') });
}

const ids = (r: AcceptResult): string[] => [...r.accepted.keys()].sort();
const vs = (name: string, subset: string, extra: Obj = {}): Obj => virtualService(name, [`${name}.test`], [{ route: [dest('app', subset, undefined, extra)] }]);
const gw = gateway('gw', 8080);

describe('accepting API objects one by one', () => {
  it('an invalid new object is left out with its problem as kind/ns/name: path: message; the valid ones apply', () => {
    const bad = obj(virtualService('bad', ['bad.test'], [{ route: [dest('app', undefined, -1)] }]));
    const r = run([obj(gw), obj(vs('good', '')), bad].map((o) => o));
    expect(ids(r)).toEqual(['Gateway/default/gw', 'VirtualService/default/good']);
    expect(r.rejected).toHaveLength(1);
    expect(r.rejected[0]!.kept).toBeNull();
    expect(r.rejected[0]!.problems.map(formatProblem)).toEqual(['VirtualService/default/bad: spec.http[0].route[0].weight: must be between 0 and 2147483647, got -1']);
  });

  it('a bad new version of an object keeps its last good version', () => {
    const good = obj(vs('app', ''));
    const broken = obj({ ...vs('app', ''), spec: { hosts: ['app.test'], gateways: ['gw'], http: [{ route: [{ destination: { host: 'app' }, weight: -5 }] }] } });
    const r = run([obj(gw), broken], [good]);
    expect(r.accepted.get('VirtualService/default/app')).toBe(good);
    expect(r.rejected.map((x) => [x.object, x.kept])).toEqual([[broken, good]]);
  });

  it('an unchanged object that names what is gone is left out of this version, and comes back with it', () => {
    const app = obj(vs('app', ''));
    const g = obj(gw);
    // The Gateway was deleted: the VirtualService names a gateway that is not there.
    const without = run([app], [app, g]);
    expect(ids(without)).toEqual([]);
    expect(without.rejected[0]!.problems.map(formatProblem)).toEqual(['VirtualService/default/app: spec.gateways[0]: gateway "default/gw" not found']);
    // Back: both apply.
    expect(ids(run([g, app], [...without.accepted.values()]))).toEqual(['Gateway/default/gw', 'VirtualService/default/app']);
  });

  it('a kind/namespace/name also defined in a file: the file wins, the API object is refused', () => {
    const file = parseYamlText(yamlDocs(gw), 'gw.yaml').resources;
    const r = run([obj(gw), obj(vs('app', ''))], [], file);
    expect(ids(r)).toEqual(['VirtualService/default/app']);
    expect(r.rejected[0]!.problems.map(formatProblem)).toEqual(['Gateway/default/gw: duplicate Gateway/default/gw, first defined at gw.yaml:1']);
    expect(r.resources[0]!.source.file).toBe('gw.yaml');
  });

  it('a certificate that does not load is blamed on the changed Secret, not on the Gateway naming it', () => {
    const ca = createCa('accept');
    try {
      const a = ca.issue('a', { sans: ['DNS:a.test'] });
      const b = ca.issue('b', { sans: ['DNS:a.test'] });
      const secret = (crt: string, key: string): StoredObject =>
        obj({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'cred', namespace: 'istio-system' }, type: 'kubernetes.io/tls', data: { 'tls.crt': Buffer.from(crt).toString('base64'), 'tls.key': Buffer.from(key).toString('base64') } });
      const tlsGw = obj({ apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'tls' }, spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 8443, name: 'https', protocol: 'HTTPS' }, hosts: ['a.test'], tls: { mode: 'SIMPLE', credentialName: 'cred' } }] } });
      const good = secret(a.certPem, a.keyPem);
      const mismatched = secret(a.certPem, b.keyPem);
      const r = run([tlsGw, mismatched], [tlsGw, good]);
      expect(r.accepted.get('Gateway/default/tls')).toBe(tlsGw);
      expect(r.accepted.get('Secret/istio-system/cred')).toBe(good);
      expect(r.rejected.map((x) => x.object.id)).toEqual(['Secret/istio-system/cred']);
      expect(formatProblem(r.rejected[0]!.problems[0]!)).toBe('Gateway/default/tls: spec.servers[0].tls.credentialName: secret "cred" tls.crt does not match tls.key');

      // Deleted, it goes (as in Istio, the server then has no certificate: a warning, not an error).
      const deleted = run([tlsGw], [tlsGw, good]);
      expect(ids(deleted)).toEqual(['Gateway/default/tls']);
      expect(deleted.problems.map(formatProblem)).toContain('Gateway/default/tls: spec.servers[0].tls.credentialName: secret "cred" not found in namespace istio-system or default');
    } finally {
      ca.remove();
    }
  });

  it('only the Secrets a credentialName names take part', () => {
    const set = [
      { kind: 'Gateway', spec: { servers: [{ tls: { credentialName: 'site' } }, { tls: { credentialNames: ['other'] } }] } },
      { kind: 'DestinationRule', spec: { trafficPolicy: { portLevelSettings: [{ tls: { credentialName: 'upstream' } }] }, subsets: [{ trafficPolicy: { tls: { credentialName: 'sub' } } }] } },
    ] as unknown as Resource[];
    expect([...referencedSecrets(set)].sort()).toEqual(['other', 'other-cacert', 'site', 'site-cacert', 'sub', 'sub-cacert', 'upstream', 'upstream-cacert']);
  });

  it('kept objects are trimmed: no resourceVersion, managedFields or last-applied annotation in what the configuration sees', () => {
    const o = trimObject('VirtualService', 'networking.istio.io/v1', {
      apiVersion: 'networking.istio.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'x', namespace: 'ns', resourceVersion: '7', managedFields: [{}], uid: 'u', annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}', keep: 'me' } },
      spec: { hosts: ['x'] },
      status: { validationMessages: [] },
    });
    expect(o).toMatchObject({ id: 'VirtualService/ns/x', metadata: { name: 'x', namespace: 'ns', annotations: { keep: 'me' } }, body: { hosts: ['x'] }, resourceVersion: '7' });
    // The same content at another resourceVersion is the same content.
    const again = trimObject('VirtualService', 'networking.istio.io/v1', { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'x', namespace: 'ns', resourceVersion: '9', annotations: { keep: 'me' } }, spec: { hosts: ['x'] } });
    expect(again.fingerprint).toBe(o.fingerprint);
  });
});
