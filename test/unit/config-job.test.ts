// A reload's heavy part, as the configuration thread runs it: what it reports for an invalid,
// unchanged, same-snapshot and new configuration, and that its result survives the structured
// clone between threads (a Snapshot with its Maps).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runConfigJob, type ConfigJob } from '../../src/workers/config-job.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-job-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const job = (over: Partial<ConfigJob> = {}): ConfigJob => ({ paths: [dir], namespace: 'istio-system', labels: { istio: 'ingressgateway' }, bind: '127.0.0.1', configHash: null, snapshotHash: null, ...over });
const write = (weight: number, extra = ''): void =>
  writeFileSync(join(dir, 'c.yaml'), yamlDocs(gateway('gw', 18080), ...service('app', { v1: 19001, v2: 19002 }), virtualService('app', ['app.test'], [{ route: [dest('app', 'v1', weight), dest('app', 'v2', 100 - weight)] }])) + extra);

describe('configuration job', () => {
  it('a new configuration: a snapshot that survives the structured clone between threads', () => {
    write(80);
    const r = runConfigJob(job());
    expect(r.kind).toBe('snapshot');
    if (r.kind !== 'snapshot') return;
    const copy = structuredClone(r);
    expect(copy.snapshot.routes).toBeInstanceOf(Map);
    expect(copy.snapshot.routes.get('http.18080')).toEqual(r.snapshot.routes.get('http.18080'));
    expect(copy.snapshot.hash).toBe(r.snapshot.hash);
  });

  it('unchanged files, and a change that resolves to the same snapshot, are reported as such', () => {
    write(80);
    const first = runConfigJob(job());
    if (first.kind !== 'snapshot') throw new Error(first.kind);
    expect(runConfigJob(job({ configHash: first.configHash, snapshotHash: first.snapshot.hash })).kind).toBe('unchanged');
    // A label on a resource changes the configuration, not what it resolves to.
    write(80, '\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: extra, namespace: default, labels: {team: a}}\nspec: {hosts: [extra.example.com], location: MESH_EXTERNAL, resolution: NONE, ports: [{number: 9, name: tcp, protocol: TCP}]}\n');
    const withExtra = runConfigJob(job());
    if (withExtra.kind !== 'snapshot') throw new Error(withExtra.kind);
    write(80, '\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: extra, namespace: default, labels: {team: b}}\nspec: {hosts: [extra.example.com], location: MESH_EXTERNAL, resolution: NONE, ports: [{number: 9, name: tcp, protocol: TCP}]}\n');
    const relabelled = runConfigJob(job({ configHash: withExtra.configHash, snapshotHash: withExtra.snapshot.hash }));
    expect(relabelled.kind).toBe('same-snapshot');
  });

  it('an invalid configuration: its problems, no snapshot', () => {
    write(70);
    writeFileSync(join(dir, 'c.yaml'), yamlDocs(virtualService('bad', ['bad.test'], [{ route: [dest('app', 'v1', 50), dest('app', 'v2', -40)] }])));
    const r = runConfigJob(job());
    expect(r.kind).toBe('invalid');
    expect(r.problems.some((p) => p.severity === 'error' && p.message.includes('got -40'))).toBe(true);
  });
});
