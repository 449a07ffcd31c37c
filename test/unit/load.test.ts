import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPaths, parseYamlText } from '../../src/config/load.js';
import { formatProblem } from '../../src/config/types.js';
import { validate } from '../../src/config/validate.js';

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

  it('lines stay right once the load has ended and the syntax trees are dropped (read again from the text)', async () => {
    const text = `# comment\n${GW}---\napiVersion: networking.istio.io/v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {name: a}\n  spec:\n    hosts: [a.example.com]\n- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {name: b}\n  spec:\n    hosts:\n    - b.example.com\n`;
    const { resources } = parseYamlText(text, 'cfg.yaml');
    const paths = [['spec', 'servers', 0, 'port'], ['spec', 'servers', 0, 'hosts'], ['spec', 'hosts'], ['spec', 'hosts', 0], ['spec', 'nothing', 'here'], []] as const;
    const lines = (): number[][] => resources.map((r) => paths.map((p) => r.source.lineOf([...p])));
    const during = lines();
    // Each field's key line, else its nearest existing ancestor's (a List item's: the item's own lines).
    expect(during).toEqual([
      [8, 9, 6, 6, 6, 2],
      [17, 17, 18, 18, 17, 14],
      [22, 22, 23, 24, 22, 19],
    ]);
    // The trees are released after the job that parsed them (setImmediate): lines come from the text.
    await new Promise((r) => setImmediate(r));
    expect(lines()).toEqual(during);
  });

  it('reports a YAML syntax error as <file>:<line>: yaml: <message>', () => {
    const { problems } = parseYamlText('apiVersion: v1\nkind: Secret\nmetadata:\n  name: [unclosed\n', 'bad.yaml');
    expect(problems.length).toBeGreaterThan(0);
    expect(formatProblem(problems[0]!)).toMatch(/^bad\.yaml:\d+: yaml: /);
  });

  it('requires apiVersion, kind and metadata.name, naming the field', () => {
    const { problems } = parseYamlText('apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  namespace: x\nspec: {}\n', 'f.yaml');
    // The name is absent, so the line is that of its nearest present ancestor, `metadata:`.
    expect(problems.map(formatProblem)).toEqual(['f.yaml:3: Gateway/x/?: metadata.name: missing required field']);
  });

  it('a file that is not YAML gets one error line, the first, not one per document or token', () => {
    const text = ['This is a readme, not YAML.', 'It has: colons: here', '- and a list item', '  { unbalanced', 'key: [unclosed', '---', 'more: {broken', ''].join('\n');
    const { resources, problems } = parseYamlText(text, 'notes.yaml');
    expect(resources).toEqual([]);
    expect(problems.map(formatProblem)).toHaveLength(1);
    expect(formatProblem(problems[0]!)).toMatch(/^notes\.yaml:\d+: yaml: /);
    const binary = parseYamlText(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x7b, 0x3a, 0x5b]).toString('utf8'), 'logo.yaml');
    expect(binary.problems.map(formatProblem)).toEqual(['logo.yaml:1: yaml: not a text file (binary content): expected YAML']);
  });

  it('a Helm/Go template gets one warning and is skipped, whether it fails to parse or parses to template junk', () => {
    const failing = ['{{- if .Values.gateway.enabled }}', 'apiVersion: networking.istio.io/v1', 'kind: Gateway', 'metadata:', '  name: gw', 'spec:', '  servers: []', '{{- end }}', ''].join('\n');
    const junk = ['apiVersion: networking.istio.io/v1', 'kind: Gateway', 'metadata:', '  name: {{ .Values.name }}', 'spec:', '  selector:', '    istio: {{ .Values.selector | quote }}', ''].join('\n');
    const quoted = ['apiVersion: networking.istio.io/v1', 'kind: Gateway', 'metadata:', '  name: "{{ .Release.Name }}-gw"', 'spec: {}', ''].join('\n');
    expect(parseYamlText(failing, 'tpl.yaml').problems.map(formatProblem)).toEqual([
      'tpl.yaml:1: looks like a Helm/Go template ("{{- if .Values.gateway.enabled }}"), not plain YAML: skipped; render it first (helm template)',
    ]);
    for (const [text, line, action] of [[junk, 4, '{{ .Values.name }}'], [quoted, 4, '{{ .Release.Name }}']] as const) {
      const r = parseYamlText(text, 'tpl.yaml');
      expect(r.resources).toEqual([]);
      expect(r.problems.map((p) => [p.severity, p.line, p.message.startsWith(`looks like a Helm/Go template (${JSON.stringify(action)})`)])).toEqual([['warning', line, true]]);
    }
    // Valid YAML whose strings hold template-like text (a log format, a script) is read as it is.
    const ok = parseYamlText(['apiVersion: v1', 'kind: ConfigMap', 'metadata: {name: fmt}', 'data:', '  format: "{{ .Method }} {{ .Path }}"', ''].join('\n'), 'cm.yaml');
    expect(ok.problems).toEqual([]);
    expect(ok.resources.map((x) => x.kind)).toEqual(['ConfigMap']);
  });

  it('kinds Gatehouse does not read need no name and get one warning per kind, never an error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-kinds-'));
    writeFileSync(
      join(dir, 'mixed.yaml'),
      [
        'apiVersion: install.istio.io/v1alpha1', 'kind: IstioOperator', 'spec: {profile: demo}', '---',
        'apiVersion: apps/v1', 'kind: Deployment', 'metadata: {name: a}', 'spec: {}', '---',
        'apiVersion: apps/v1', 'kind: Deployment', 'metadata: {name: b}', 'spec: {}', '---',
        'apiVersion: v1', 'kind: Service', 'metadata: {name: a}', 'spec: {}', '---',
        'apiVersion: v1', 'kind: ServiceAccount', 'metadata: {name: a}', '---',
        'apiVersion: networking.istio.io/v1alpha3', 'kind: EnvoyFilter', 'metadata: {name: f1}', 'spec: {}', '---',
        'apiVersion: networking.istio.io/v1alpha3', 'kind: EnvoyFilter', 'metadata: {name: f2}', 'spec: {}', '---',
        'apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources: [a.yaml]', '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'gw.yaml'), GW);
    // A Helm chart's own files are YAML but not Kubernetes objects.
    writeFileSync(join(dir, 'Chart.yaml'), 'apiVersion: v2\nname: tags\nversion: 1.1.0\n');
    writeFileSync(join(dir, 'values.yaml'), 'global:\n  hub: docker.io/istio\n---\nother: 1\n');
    const r = loadPaths([dir]);
    expect(r.problems.map(formatProblem)).toEqual([
      `${join(dir, 'Chart.yaml')}:1: not a Kubernetes object (no apiVersion and kind): ignored`,
      `${join(dir, 'values.yaml')}:1: not a Kubernetes object (no apiVersion and kind): ignored`,
    ]);
    expect(r.problems.every((p) => p.severity === 'warning')).toBe(true);
    // Half of a kind Gatehouse reads is still an error.
    expect(parseYamlText('kind: Gateway\nmetadata: {name: g}\n', 'g.yaml').problems.map(formatProblem)).toEqual(['g.yaml:1: Gateway/default/g: apiVersion: missing required field']);
    expect(parseYamlText('apiVersion: networking.istio.io/v1\nmetadata: {name: g}\n', 'g.yaml').problems.map(formatProblem)).toEqual(['g.yaml:1: ?/default/g: kind: missing required field']);
    const v = validate(r.resources, { gatewayNamespace: 'istio-system', labels: {}, rootNamespace: 'istio-system' });
    expect(v.problems.filter((p) => p.severity === 'error')).toEqual([]);
    expect(v.problems.map((p) => p.message)).toEqual([
      'kind IstioOperator (install.istio.io/v1alpha1) is not supported by Gatehouse; ignored',
      'kind Deployment (apps/v1) is not supported by Gatehouse; ignored',
      'kind Service (v1) is not supported by Gatehouse; ignored',
      'kind ServiceAccount (v1) is not supported by Gatehouse; ignored',
      'kind EnvoyFilter (networking.istio.io/v1alpha3) is not supported by Gatehouse; ignored',
      'kind Kustomization (kustomize.config.k8s.io/v1beta1) is not supported by Gatehouse; ignored',
    ]);
    expect(v.accepted.map((x) => x.kind)).toEqual(['Gateway']);
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
