// The mesh CA (Citadel's role): an EC P-256 root generated once and reused across restarts, and
// short-lived EC P-256 workload certificates with a SPIFFE URI SAN that chain to it.
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GatewayIdentity, MeshCa, MeshCaError, WorkloadCertificates, workloadTtlMs } from '../../src/tls/mesh-ca.js';
import { parseSpiffeId, principalOf, spiffeIdOfSan } from '../../src/tls/spiffe.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'gatehouse-meshca-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('mesh root CA', () => {
  it('generates an EC P-256 root in <state dir>/mesh-ca on first start and reuses it after a restart', async () => {
    const dir = tempDir();
    const a = await MeshCa.open({ stateDir: dir });
    expect(a.source).toBe('generated');
    const onDisk = readFileSync(join(dir, 'mesh-ca', 'root-cert.pem'), 'utf8');
    expect(onDisk).toBe(a.rootPem);
    expect(a.root.ca).toBe(true);
    expect(a.root.checkIssued(a.root)).toBe(true);
    expect(a.root.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const life = new Date(a.root.validTo).getTime() - Date.now();
    expect(life).toBeGreaterThan(9.9 * 365 * 86_400_000);
    const key = createPrivateKey(readFileSync(join(dir, 'mesh-ca', 'root-key.pem')));
    expect(a.root.checkPrivateKey(key)).toBe(true);

    const b = await MeshCa.open({ stateDir: dir });
    expect(b.source).toBe('stored');
    expect(b.rootPem).toBe(a.rootPem);
    // A certificate issued before the restart still verifies against the reloaded root.
    const issued = await a.issue({ spiffeId: 'spiffe://cluster.local/ns/x/sa/y' });
    expect(new X509Certificate(issued.certChainPem).verify(b.root.publicKey)).toBe(true);
  });

  it('two processes starting at once end up with one root', async () => {
    const dir = tempDir();
    const [a, b] = await Promise.all([MeshCa.open({ stateDir: dir }), MeshCa.open({ stateDir: dir })]);
    const c = await MeshCa.open({ stateDir: dir });
    expect(c.rootPem).toBe(readFileSync(join(dir, 'mesh-ca', 'root-cert.pem'), 'utf8'));
    expect([a.rootPem, b.rootPem]).toContain(c.rootPem);
  });

  it('uses the CA files named by GATEHOUSE_CA_CERT / GATEHOUSE_CA_KEY and refuses half of them', async () => {
    const dir = tempDir();
    const src = await MeshCa.open({ stateDir: dir });
    const ca = await MeshCa.open({ certFile: src.certFile, keyFile: src.keyFile, stateDir: tempDir() });
    expect(ca.source).toBe('files');
    expect(ca.rootPem).toBe(src.rootPem);
    await expect(MeshCa.open({ certFile: src.certFile })).rejects.toThrow(MeshCaError);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileSync(join(dir, 'other.key'), other);
    await expect(MeshCa.open({ certFile: src.certFile, keyFile: join(dir, 'other.key') })).rejects.toThrow(/does not belong/);
  });
});

describe('workload certificates', () => {
  it('issues an EC P-256 certificate with the SPIFFE URI SAN, serverAuth+clientAuth, that chains to the root', async () => {
    const ca = await MeshCa.open({ stateDir: tempDir() });
    const id = 'spiffe://cluster.local/ns/shop/sa/reviews';
    const before = Date.now();
    const c = await ca.issue({ spiffeId: id });
    const leaf = new X509Certificate(c.certChainPem);
    expect(leaf.subjectAltName).toBe(`URI:${id}`);
    expect(spiffeIdOfSan(leaf.subjectAltName)).toBe(id);
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.checkPrivateKey(createPrivateKey(c.keyPem))).toBe(true);
    expect(leaf.verify(ca.root.publicKey)).toBe(true);
    expect(leaf.checkIssued(ca.root)).toBe(true);
    expect(c.rootPem).toBe(ca.rootPem);
    // 24 h by default, backdated a little.
    const notAfter = new Date(leaf.validTo).getTime();
    expect(notAfter).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 24 * 3_600_000 - 1000);
    expect(notAfter).toBeLessThanOrEqual(Date.now() + 24 * 3_600_000);
    expect(new Date(leaf.validFrom).getTime()).toBeLessThanOrEqual(before);
    // openssl agrees that the chain verifies.
    const d = tempDir();
    writeFileSync(join(d, 'root.pem'), ca.rootPem);
    writeFileSync(join(d, 'leaf.pem'), c.certChainPem);
    expect(execFileSync('openssl', ['verify', '-CAfile', join(d, 'root.pem'), join(d, 'leaf.pem')], { encoding: 'utf8' })).toContain('OK');
  });

  it('honours a short TTL and refuses one above 90 days or a non-workload identity', async () => {
    const ca = await MeshCa.open({ stateDir: tempDir() });
    const c = await ca.issue({ spiffeId: 'spiffe://example.org/ns/a/sa/b', ttlMs: 10_000 });
    const leaf = new X509Certificate(c.certChainPem);
    expect(new Date(leaf.validTo).getTime() - c.issuedAt).toBeLessThanOrEqual(10_000);
    await expect(ca.issue({ spiffeId: 'spiffe://example.org/ns/a/sa/b', ttlMs: 91 * 86_400_000 })).rejects.toThrow(/90 days/);
    await expect(ca.issue({ spiffeId: 'https://example.org/x' })).rejects.toThrow(/not a workload identity/);
    expect(workloadTtlMs({ GATEHOUSE_WORKLOAD_CERT_TTL: '10s' })).toBe(10_000);
    expect(workloadTtlMs({})).toBe(86_400_000);
    expect(() => workloadTtlMs({ GATEHOUSE_WORKLOAD_CERT_TTL: 'soon' })).toThrow(MeshCaError);
  });

  it('certifies the key of a CSR (its own SANs are ignored)', async () => {
    const ca = await MeshCa.open({ stateDir: tempDir() });
    const d = tempDir();
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(d, 'k.pem'), '-subj', '/CN=ignored', '-out', join(d, 'csr.pem')], { stdio: 'ignore' });
    const c = await ca.issue({ spiffeId: 'spiffe://cluster.local/ns/vm/sa/app', csrPem: readFileSync(join(d, 'csr.pem'), 'utf8') });
    expect(c.keyPem).toBe('');
    const leaf = new X509Certificate(c.certChainPem);
    expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(join(d, 'k.pem'))))).toBe(true);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/vm/sa/app');
    await expect(ca.issue({ spiffeId: 'spiffe://cluster.local/ns/vm/sa/app', csrPem: 'nope' })).rejects.toThrow(MeshCaError);
  });

  it('caches per identity until 80% of the lifetime, then re-issues', async () => {
    const ca = await MeshCa.open({ stateDir: tempDir() });
    const certs = new WorkloadCertificates(ca, { ttlMs: 1000 });
    const [a, b] = await Promise.all([certs.get('spiffe://cluster.local/ns/a/sa/x'), certs.get('spiffe://cluster.local/ns/a/sa/x')]);
    expect(a).toBe(b);
    expect(certs.cached('spiffe://cluster.local/ns/a/sa/x')).toBe(a);
    expect(certs.cached('spiffe://cluster.local/ns/a/sa/x', a.issuedAt + 850)).toBeUndefined();
    const other = await certs.get('spiffe://cluster.local/ns/b/sa/x');
    expect(other.serial).not.toBe(a.serial);
  });

  it("rotates the gateway's own certificate before it expires", async () => {
    const ca = await MeshCa.open({ stateDir: tempDir() });
    const id = new GatewayIdentity(new WorkloadCertificates(ca, { ttlMs: 2000 }), 'spiffe://cluster.local/ns/istio-system/sa/gatehouse');
    await id.start();
    const first = id.current!;
    let rotations = 0;
    id.onRotate = () => rotations++;
    await new Promise((r) => setTimeout(r, 2200));
    id.close();
    expect(rotations).toBeGreaterThanOrEqual(1);
    expect(id.current!.serial).not.toBe(first.serial);
    expect(id.certificate!.leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/istio-system/sa/gatehouse');
  });
});

describe('principals', () => {
  it("derives Istio's source.principal and source.namespace from a SPIFFE id", () => {
    expect(principalOf('spiffe://cluster.local/ns/shop/sa/reviews')).toEqual({ principal: 'cluster.local/ns/shop/sa/reviews', namespace: 'shop' });
    expect(principalOf('spiffe://example.org/custom')).toEqual({ principal: 'example.org/custom', namespace: '' });
    expect(principalOf('https://x')).toBeUndefined();
    expect(principalOf(undefined)).toBeUndefined();
    expect(parseSpiffeId('spiffe://td/ns/a/sa/b')).toEqual({ trustDomain: 'td', namespace: 'a', serviceAccount: 'b' });
    expect(spiffeIdOfSan('DNS:a.test, URI:spiffe://td/ns/a/sa/b')).toBe('spiffe://td/ns/a/sa/b');
  });
});
