import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPaths, parseYamlText } from '../../src/config/load.js';
import { formatProblem } from '../../src/config/types.js';

const GW = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
`;

describe('parse: multi-document YAML with positions', () => {
  it('reads every document, defaults the namespace to default and remembers file and line', () => {
    const text = `# comment\n${GW}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\n  namespace: shop\nspec:\n  hosts: [a.example.com]\n`;
    const { resources, problems } = parseYamlText(text, 'cfg.yaml');
    expect(problems).toEqual([]);
    expect(resources.map((r) => `${r.kind}/${r.metadata.namespace}/${r.metadata.name}@${r.source.line}`)).toEqual(['Gateway/default/gw@2', 'VirtualService/shop/vs@11']);
    // lineOf points at the key of a field, nested or not.
    expect(resources[0]!.source.lineOf(['spec', 'servers', 0, 'port'])).toBe(8);
    expect(resources[1]!.source.lineOf(['spec', 'hosts'])).toBe(17);
  });

  it('reports a YAML syntax error as <file>:<line>: yaml: <message>', () => {
    const { problems } = parseYamlText('apiVersion: v1\nkind: Secret\nmetadata:\n  name: [unclosed\n', 'bad.yaml');
    expect(problems.length).toBeGreaterThan(0);
    expect(formatProblem(problems[0]!)).toMatch(/^bad\.yaml:\d+: yaml: /);
  });

  it('requires apiVersion, kind and metadata.name, naming the field', () => {
    const { problems } = parseYamlText('apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  namespace: x\nspec: {}\n', 'f.yaml');
    // The name is absent, so the line is that of its nearest present ancestor, `metadata:`.
    expect(problems.map(formatProblem)).toEqual(['f.yaml:3: Gateway/x/?: metadata.name: metadata.name is required']);
  });

  it('expands kind: List like kubectl', () => {
    const text = `apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: a}\n  spec: {}\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: b}\n  spec: {}\n`;
    const { resources } = parseYamlText(text, 'list.yaml');
    expect(resources.map((r) => `${r.metadata.name}@${r.source.line}`)).toEqual(['a@4', 'b@8']);
  });

  it('loads folders recursively, skipping hidden entries (ConfigMap ..data generations) and non-YAML files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-load-'));
    writeFileSync(join(dir, 'a.yaml'), GW);
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'b.yml'), GW.replace('name: gw', 'name: gw2'));
    mkdirSync(join(dir, '..2026_11_23'));
    writeFileSync(join(dir, '..2026_11_23', 'a.yaml'), GW);
    writeFileSync(join(dir, 'notes.txt'), 'not yaml');
    const r = loadPaths([dir]);
    expect(r.problems).toEqual([]);
    expect(r.files).toEqual([join(dir, 'a.yaml'), join(dir, 'sub', 'b.yml')]);
    expect(r.resources.map((x) => x.metadata.name)).toEqual(['gw', 'gw2']);
  });

  it('reports a missing path', () => {
    const r = loadPaths(['/nonexistent/gatehouse.yaml']);
    expect(r.problems.map(formatProblem)).toEqual(['/nonexistent/gatehouse.yaml:0: no such file or directory']);
  });
});
