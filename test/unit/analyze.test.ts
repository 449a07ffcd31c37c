// The analyzer checks (`istioctl analyze`'s, where they make sense without Kubernetes): valid
// configuration that does not do what it says, reported as warnings with file:line and Istio's
// message code, as `gatehouse validate` prints them.
import { describe, expect, it } from 'vitest';
import { analyze, type AnalyzeOptions } from '../../src/config/analyze.js';
import { parseYamlText } from '../../src/config/load.js';
import { sortProblems } from '../../src/config/pipeline.js';
import { formatProblem } from '../../src/config/types.js';

const OPTS: AnalyzeOptions = { labels: { istio: 'ingressgateway' }, gatewayNamespace: 'istio-system', rootNamespace: 'istio-system' };

/** Strips the leading newline and the common indentation, so line 1 is the first YAML line. */
function dedent(text: string): string {
  const lines = text.replace(/^\n/, '').replace(/\n\s*$/, '\n').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

/** Several documents, each dedented on its own, as one multi-document file. */
const docs = (...texts: string[]): string => texts.map(dedent).join('---\n');

function run(yaml: string, opts: AnalyzeOptions = OPTS): string[] {
  const parsed = parseYamlText(dedent(yaml), 'cfg.yaml');
  expect(parsed.problems.map(formatProblem)).toEqual([]);
  // In the order validate prints them: by line (one file here), stable.
  const problems = sortProblems(analyze(parsed.resources, opts));
  for (const p of problems) expect(p.severity).toBe('warning');
  return problems.map(formatProblem);
}

const vs = (http: string): string => `
  apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: app, namespace: default}
  spec:
    hosts: [app.test]
    gateways: [gw]
    http:
${http}`;

describe('analyze: VirtualService rules that are never used (IST0130, IST0131)', () => {
  it('a rule after a rule without matches is unreachable (IST0130), as is a second rule without matches', () => {
    expect(
      run(
        vs(`
    - route: [{destination: {host: a}}]
    - match: [{uri: {prefix: /b}}]
      route: [{destination: {host: b}}]
    - name: last
      route: [{destination: {host: c}}]`),
      ),
    ).toEqual([
      'cfg.yaml:10: VirtualService/default/app: spec.http[1]: [IST0130] VirtualService rule #1 not used (route without matches defined before)',
      'cfg.yaml:12: VirtualService/default/app: spec.http[2]: [IST0130] VirtualService rule "last" not used (only the last rule can have no matches)',
    ]);
  });

  it('a match identical to an earlier one is not used (IST0131); a rule whose every match is is unreachable (IST0130)', () => {
    expect(
      run(
        vs(`
    - name: first
      match: [{uri: {prefix: /a}, headers: {x-user: {exact: jason}}}]
      route: [{destination: {host: a}}]
    - name: second
      match:
      - {headers: {x-user: {exact: jason}}, uri: {prefix: /a}}
      - {uri: {exact: /other}}
      route: [{destination: {host: b}}]
    - match: [{name: named, uri: {prefix: /a}, headers: {x-user: {exact: jason}}}]
      route: [{destination: {host: c}}]`),
      ),
    ).toEqual([
      'cfg.yaml:14: VirtualService/default/app: spec.http[1].match[0]: [IST0131] VirtualService rule "second" match #0 is not used (duplicate/overlapping match in rule "first")',
      'cfg.yaml:17: VirtualService/default/app: spec.http[2]: [IST0130] VirtualService rule #2 not used (all matches used by prior rules)',
      'cfg.yaml:17: VirtualService/default/app: spec.http[2].match[0]: [IST0131] VirtualService rule #2 match "named" is not used (duplicate/overlapping match in rule "first")',
    ]);
  });

  it('a match an earlier, wider one always takes first is not used: a longer prefix, more conditions', () => {
    const out = run(
      vs(`
    - match: [{uri: {prefix: /api}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {prefix: /api/v2}, method: {exact: POST}, headers: {x-team: {prefix: blue}}}]
      route: [{destination: {host: b}}]
    - match: [{uri: {exact: /api/health}}]
      route: [{destination: {host: c}}]`),
    );
    expect(out).toEqual([
      'cfg.yaml:11: VirtualService/default/app: spec.http[1]: [IST0130] VirtualService rule #1 not used (all matches used by prior rules)',
      'cfg.yaml:11: VirtualService/default/app: spec.http[1].match[0]: [IST0131] VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)',
      'cfg.yaml:13: VirtualService/default/app: spec.http[2]: [IST0130] VirtualService rule #2 not used (all matches used by prior rules)',
      'cfg.yaml:13: VirtualService/default/app: spec.http[2].match[0]: [IST0131] VirtualService rule #2 match #0 is not used (duplicate/overlapping match in rule #0)',
    ]);
  });

  it('`uri: {prefix: /}` matches every request: what follows is unreachable', () => {
    expect(
      run(
        vs(`
    - match: [{uri: {prefix: /}}]
      route: [{destination: {host: a}}]
    - match: [{headers: {x-canary: {exact: "1"}}}]
      route: [{destination: {host: b}}]`),
      ),
    ).toEqual(['cfg.yaml:11: VirtualService/default/app: spec.http[1]: [IST0130] VirtualService rule #1 not used (rule #0 before it matches every request)']);
  });

  it('narrower earlier matches hide nothing: exact before prefix, a header condition, regexes, case, other ports', () => {
    expect(
      run(
        vs(`
    - match: [{uri: {exact: /a}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {prefix: /a}, headers: {x-user: {exact: jason}}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {prefix: /a}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {regex: "/r/[0-9]+"}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {exact: /r/1}}]
      route: [{destination: {host: a}}]
    - match: [{uri: {exact: /Case}, port: 8080}]
      route: [{destination: {host: a}}]
    - match: [{uri: {exact: /Case}, ignoreUriCase: true, port: 8080}]
      route: [{destination: {host: a}}]
    - match: [{uri: {exact: /Case}, port: 9090}]
      route: [{destination: {host: a}}]
    - match: [{withoutHeaders: {x-skip: {}}}]
      route: [{destination: {host: a}}]
    - route: [{destination: {host: a}}]`),
      ),
    ).toEqual([]);
  });

  it('a delegating rule falls through when its delegate matches nothing: it hides no later rule', () => {
    expect(
      run(
        vs(`
    - match: [{uri: {prefix: /shop}}]
      delegate: {name: shop}
    - match: [{uri: {prefix: /shop/cart}}]
      route: [{destination: {host: cart}}]
    - route: [{destination: {host: other}}]`),
      ),
    ).toEqual([]);
  });

  it('tcp and tls routes: identical matches and rules after a rule without matches (Istio)', () => {
    expect(
      run(`
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: l4, namespace: default}
        spec:
          hosts: [l4.test]
          gateways: [gw]
          tcp:
          - match: [{port: 31400}]
            route: [{destination: {host: a}}]
          - match: [{port: 31400}]
            route: [{destination: {host: b}}]
          - route: [{destination: {host: c}}]
          - route: [{destination: {host: d}}]
      `),
    ).toEqual([
      'cfg.yaml:10: VirtualService/default/l4: spec.tcp[1]: [IST0130] VirtualService rule #1 not used (all matches used by prior rules)',
      'cfg.yaml:10: VirtualService/default/l4: spec.tcp[1].match[0]: [IST0131] VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)',
      'cfg.yaml:13: VirtualService/default/l4: spec.tcp[3]: [IST0130] VirtualService rule #3 not used (only the last rule can have no matches)',
    ]);
  });
});

describe('analyze: conflicts across resources', () => {
  it('VirtualServices for the mesh defining the same host (IST0109), unless exportTo keeps them apart', () => {
    const out = run(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: a, namespace: default}
      spec:
        hosts: [reviews]
        http: [{route: [{destination: {host: reviews}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: b, namespace: default}
      spec:
        hosts: [reviews.default.svc.cluster.local]
        gateways: [mesh, gw]
        http: [{route: [{destination: {host: reviews}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: c, namespace: team-a}
      spec:
        hosts: [ratings.default.svc.cluster.local]
        exportTo: [.]
        http: [{route: [{destination: {host: ratings.default.svc.cluster.local}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: d, namespace: team-b}
      spec:
        hosts: [ratings.default.svc.cluster.local]
        exportTo: [.]
        http: [{route: [{destination: {host: ratings.default.svc.cluster.local}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: e, namespace: default}
      spec:
        hosts: [reviews]
        gateways: [gw]
        http: [{route: [{destination: {host: reviews}}]}]
    `);
    const msg = '[IST0109] The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.';
    expect(out).toEqual([`cfg.yaml:5: VirtualService/default/a: spec.hosts[0]: ${msg}`, `cfg.yaml:12: VirtualService/default/b: spec.hosts[0]: ${msg}`]);
  });

  it('a namespace sees the mesh hosts exported everywhere: a wildcard one overlaps its own (IST0109)', () => {
    const out = run(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: wild, namespace: default}
      spec:
        hosts: ["*.default.svc.cluster.local"]
        http: [{route: [{destination: {host: reviews}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: local, namespace: team-a}
      spec:
        hosts: [ratings.default.svc.cluster.local]
        exportTo: [.]
        http: [{route: [{destination: {host: ratings.default.svc.cluster.local}}]}]
    `);
    expect(out).toEqual([
      'cfg.yaml:5: VirtualService/default/wild: spec.hosts[0]: [IST0109] The VirtualServices default/wild,team-a/local associated with mesh gateway define the same host ratings.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.',
      'cfg.yaml:12: VirtualService/team-a/local: spec.hosts[0]: [IST0109] The VirtualServices default/wild,team-a/local associated with mesh gateway define the same host ratings.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.',
    ]);
  });

  it('ServiceEntries giving one host and port different protocols (IST0177), in the scope exportTo gives them', () => {
    const se = (name: string, ns: string, protocol: string, exportTo = ''): string => `
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: ${name}, namespace: ${ns}}
      spec:
        hosts: [api.example.com]${exportTo}
        ports: [{number: 443, name: p, protocol: ${protocol}}]
        resolution: DNS
    `;
    const out = run(docs(se('a', 'default', 'TLS'), se('b', 'default', 'HTTPS'), se('c', 'default', 'TLS')));
    const msg = '[IST0177] Multiple ServiceEntries (default/a, default/b, default/c) define the same host "api.example.com" and port 443 with conflicting protocols (HTTPS, TLS)';
    expect(out).toEqual([
      `cfg.yaml:6: ServiceEntry/default/a: spec.ports[0].protocol: ${msg}`,
      `cfg.yaml:14: ServiceEntry/default/b: spec.ports[0].protocol: ${msg}`,
      `cfg.yaml:22: ServiceEntry/default/c: spec.ports[0].protocol: ${msg}`,
    ]);
    expect(run(docs(se('a', 'default', 'TLS'), se('c', 'default', 'TLS')))).toEqual([]);
    expect(run(docs(se('a', 'x', 'TLS', '\n        exportTo: [.]'), se('b', 'y', 'HTTPS', '\n        exportTo: [.]')))).toEqual([]);
  });

  it('Sidecars: two without a workload selector in one namespace (IST0111), two selecting this gateway (IST0110)', () => {
    const sc = (name: string, ns: string, selector = ''): string => `
      apiVersion: networking.istio.io/v1
      kind: Sidecar
      metadata: {name: ${name}, namespace: ${ns}}
      spec:${selector}
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    `;
    const me = '\n        workloadSelector: {labels: {istio: ingressgateway}}';
    const out = run(docs(sc('a', 'default'), sc('b', 'default'), sc('c', 'other'), sc('gw1', 'istio-system', me), sc('gw2', 'istio-system', me), sc('egress', 'istio-system', '\n        workloadSelector: {labels: {istio: egressgateway}}')));
    expect(out).toEqual([
      'cfg.yaml:3: Sidecar/default/a: metadata.name: [IST0111] The Sidecars a, b in namespace "default" have no workload selector, which can lead to undefined behavior',
      'cfg.yaml:9: Sidecar/default/b: metadata.name: [IST0111] The Sidecars a, b in namespace "default" have no workload selector, which can lead to undefined behavior',
      'cfg.yaml:23: Sidecar/istio-system/gw1: spec.workloadSelector: [IST0110] The Sidecars gw1, gw2 in namespace "istio-system" select the same workload (this gateway, labels istio=ingressgateway (the default)), which can lead to undefined behavior',
      'cfg.yaml:30: Sidecar/istio-system/gw2: spec.workloadSelector: [IST0110] The Sidecars gw1, gw2 in namespace "istio-system" select the same workload (this gateway, labels istio=ingressgateway (the default)), which can lead to undefined behavior',
    ]);
  });
});

describe('analyze: gateways and their labels', () => {
  it('a Gateway whose selector does not select this gateway is reported at its selector, with the labels in force and the fix (IST0101)', () => {
    const gw = (name: string, selector: string): string => `
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: ${name}, namespace: default}
      spec:
        selector: ${selector}
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    `;
    const text = docs(gw('ingress', '{istio: ingressgateway}'), gw('egress', '{istio: egressgateway}'), gw('any', '{}'));
    expect(run(text)).toEqual([
      `cfg.yaml:12: Gateway/default/egress: spec.selector: [IST0101] selector istio=egressgateway selects nothing here: this gateway's labels are istio=ingressgateway (the default), so none of this Gateway's servers is served (run with --labels istio=egressgateway to serve them)`,
    ]);
    expect(run(text, { ...OPTS, labels: { istio: 'egressgateway', app: 'edge' } })).toEqual([
      `cfg.yaml:5: Gateway/default/ingress: spec.selector: [IST0101] selector istio=ingressgateway selects nothing here: this gateway's labels are istio=egressgateway,app=edge, so none of this Gateway's servers is served (run with --labels istio=ingressgateway to serve them)`,
    ]);
  });

  it('JWT claim routing on a gateway no RequestAuthentication applies to (IST0149)', () => {
    const base = `
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: gw, namespace: default}
      spec:
        selector: {istio: ingressgateway}
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: claims, namespace: default}
      spec:
        hosts: ["*"]
        gateways: [gw]
        http:
        - match: [{headers: {"@request.auth.claims.groups": {exact: admin}}}]
          route: [{destination: {host: admin}}]
        - route: [{destination: {host: other}}]
    `;
    expect(run(base)).toEqual([
      'cfg.yaml:15: VirtualService/default/claims: spec.http[0].match[0].headers.@request.auth.claims.groups: [IST0149] The virtual service uses the JWT claim based routing (key: @request.auth.claims.groups) but found no request authentication for the gateway (default/gw) pod (this gateway, labels istio=ingressgateway (the default)). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing; until then the match never matches',
    ]);
    const ra = (ns: string, selector: string): string => `
      apiVersion: security.istio.io/v1
      kind: RequestAuthentication
      metadata: {name: jwt, namespace: ${ns}}
      spec:${selector}
        jwtRules: [{issuer: https://issuer.example}]
    `;
    expect(run(docs(base, ra('istio-system', '\n        selector: {matchLabels: {istio: ingressgateway}}')))).toEqual([]);
    expect(run(docs(base, ra('istio-system', '')))).toEqual([]);
    // One for another workload, or in a namespace that is neither the root nor the gateway's, does not count.
    expect(run(docs(base, ra('istio-system', '\n        selector: {matchLabels: {app: reviews}}')))).toHaveLength(1);
    expect(run(docs(base, ra('default', '')))).toHaveLength(1);
  });
});

describe('analyze: DestinationRules', () => {
  it('TLS origination without caCertificates (IST0128, port level IST0129, per subset), unless insecureSkipVerify or credentialName', () => {
    const out = run(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: api, namespace: default}
      spec:
        host: api.example.com
        trafficPolicy:
          tls: {mode: SIMPLE, sni: api.example.com}
          portLevelSettings:
          - port: {number: 8443}
            tls: {mode: MUTUAL, clientCertificate: c.pem, privateKey: k.pem}
          - port: {number: 9443}
            tls: {mode: SIMPLE, caCertificates: ca.pem}
        subsets:
        - name: skip
          trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}
        - name: secret
          trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client}}
        - name: plain
          trafficPolicy: {tls: {mode: SIMPLE}}
        - name: istio
          trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
    `);
    const tail = '; the server is then only checked against the public CA roots Node.js ships';
    expect(out).toEqual([
      `cfg.yaml:7: DestinationRule/default/api: spec.trafficPolicy.tls.mode: [IST0128] DestinationRule api in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: api.example.com${tail}`,
      `cfg.yaml:10: DestinationRule/default/api: spec.trafficPolicy.portLevelSettings[0].tls.mode: [IST0129] DestinationRule api in namespace default has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: api.example.com at port 8443${tail}`,
      `cfg.yaml:19: DestinationRule/default/api: spec.subsets[2].trafficPolicy.tls.mode: [IST0128] DestinationRule api in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: api.example.com (subset plain)${tail}`,
    ]);
  });

  it('a subset that selects no endpoint of its ServiceEntry (IST0173)', () => {
    const out = run(`
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: reviews, namespace: default}
      spec:
        hosts: [reviews.default.svc.cluster.local]
        location: MESH_INTERNAL
        resolution: STATIC
        ports: [{number: 9080, name: http, protocol: HTTP}]
        workloadSelector: {labels: {app: reviews}}
      ---
      apiVersion: networking.istio.io/v1
      kind: WorkloadEntry
      metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
      spec: {address: 10.0.0.1}
      ---
      apiVersion: networking.istio.io/v1
      kind: WorkloadEntry
      metadata: {name: elsewhere-v3, namespace: other, labels: {app: reviews, version: v3}}
      spec: {address: 10.0.0.3}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: reviews, namespace: default}
      spec:
        host: reviews
        subsets:
        - {name: v1, labels: {version: v1}}
        - {name: v3, labels: {version: v3}}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: external, namespace: default}
      spec:
        host: api.example.com
        subsets: [{name: v9, labels: {version: v9}}]
    `);
    expect(out).toEqual([
      'cfg.yaml:28: DestinationRule/default/reviews: spec.subsets[1].labels: [IST0173] The Subset v3 defined in the DestinationRule does not select any endpoint of ServiceEntry/default/reviews, which leads to 503 UH (no healthy upstream)',
    ]);
  });
});

describe('analyze: deprecated fields (IST0002), as istio/api marks them', () => {
  it('VirtualService, DestinationRule (rule, subset and port level), Gateway and Sidecar fields', () => {
    const out = run(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: old, namespace: default}
      spec:
        hosts: [old.test]
        http:
        - route: [{destination: {host: a}}]
          mirror: {host: b}
          mirrorPercent: 10
          fault: {delay: {fixedDelay: 1s, percent: 5}}
          corsPolicy: {allowOrigin: ["https://a.example"]}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: old, namespace: default}
      spec:
        host: a
        trafficPolicy:
          loadBalancer: {simple: LEAST_CONN, warmupDurationSecs: 30s}
          outlierDetection: {consecutiveErrors: 5}
          portLevelSettings:
          - port: {number: 80}
            loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024}}
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy: {loadBalancer: {simple: least_conn}}
      ---
      apiVersion: networking.istio.io/v1
      kind: Sidecar
      metadata: {name: default, namespace: default}
      spec:
        outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com}}
    `);
    expect(out).toEqual([
      'cfg.yaml:9: VirtualService/default/old: spec.http[0].mirrorPercent: [IST0002] Deprecated: HTTPRoute.mirrorPercent is deprecated; use HTTPRoute.mirrorPercentage',
      'cfg.yaml:10: VirtualService/default/old: spec.http[0].fault.delay.percent: [IST0002] Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage',
      'cfg.yaml:11: VirtualService/default/old: spec.http[0].corsPolicy.allowOrigin: [IST0002] Deprecated: CorsPolicy.allowOrigin is deprecated; use CorsPolicy.allowOrigins',
      'cfg.yaml:19: DestinationRule/default/old: spec.trafficPolicy.loadBalancer.simple: [IST0002] Deprecated: LoadBalancerSettings.simple LEAST_CONN is deprecated; use LEAST_REQUEST',
      'cfg.yaml:19: DestinationRule/default/old: spec.trafficPolicy.loadBalancer.warmupDurationSecs: [IST0002] Deprecated: LoadBalancerSettings.warmupDurationSecs is deprecated; use LoadBalancerSettings.warmup.duration',
      'cfg.yaml:20: DestinationRule/default/old: spec.trafficPolicy.outlierDetection.consecutiveErrors: [IST0002] Deprecated: OutlierDetection.consecutiveErrors is deprecated; use OutlierDetection.consecutive5xxErrors',
      'cfg.yaml:23: DestinationRule/default/old: spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.minimumRingSize: [IST0002] Deprecated: ConsistentHashLB.minimumRingSize is deprecated; use ConsistentHashLB.ringHash.minimumRingSize',
      'cfg.yaml:27: DestinationRule/default/old: spec.subsets[0].trafficPolicy.loadBalancer.simple: [IST0002] Deprecated: LoadBalancerSettings.simple LEAST_CONN is deprecated; use LEAST_REQUEST',
      'cfg.yaml:33: Sidecar/default/default: spec.outboundTrafficPolicy.egressProxy: [IST0002] Deprecated: OutboundTrafficPolicy.egressProxy ignored',
    ]);
  });
});
