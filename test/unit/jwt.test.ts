import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import type { JwtRuleConfig } from '../../src/controlplane/snapshot.js';
import { JWT_ERRORS, JwksCache, createJwtAuthenticator } from '../../src/security/jwt.js';
import type { AuthnOutcome, Authenticator, SecurityRequest } from '../../src/security/types.js';
import { createLogger } from '../../src/telemetry/log.js';

const log = createLogger('silent');
const ISS = 'https://issuer.example.com';
const ISS2 = 'issuer-two@example.com';
const now = (): number => Math.floor(Date.now() / 1000);

interface Signer {
  key: CryptoKey;
  jwk: JWK;
  alg: string;
  kid: string;
}

async function signer(alg: 'RS256' | 'ES256', kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { key: privateKey, jwk, alg, kid };
}

function token(s: Signer, claims: JWTPayload, header: { kid?: string | undefined } = {}): Promise<string> {
  const kid = 'kid' in header ? header.kid : s.kid;
  return new SignJWT({ iss: ISS, sub: 'alice', exp: now() + 600, ...claims })
    .setProtectedHeader(kid === undefined ? { alg: s.alg } : { alg: s.alg, kid })
    .sign(s.key);
}

const jwks = (...keys: JWK[]): string => JSON.stringify({ keys });

function rule(o: Partial<JwtRuleConfig> = {}): JwtRuleConfig {
  return {
    policy: 'default/ra',
    issuer: ISS,
    audiences: [],
    timeout_ms: 5000,
    from_headers: [],
    from_params: [],
    from_cookies: [],
    output_claim_to_headers: [],
    forward_original_token: false,
    ...o,
  };
}

function req(headers: string[] = [], query = ''): SecurityRequest {
  return {
    method: 'GET',
    path: '/p',
    query,
    host: 'h.example',
    authority: 'h.example',
    headers,
    localPort: 8080,
    sourceIp: '127.0.0.1',
    remoteIp: '127.0.0.1',
    destinationIp: '127.0.0.1',
    sourcePrincipal: '',
    sourceNamespace: '',
    sni: '',
  };
}

const bearer = (t: string): string[] => ['host', 'h.example', 'authorization', `Bearer ${t}`, 'x-other', '1'];

async function denied(a: Authenticator, r: SecurityRequest, status: 401 | 403 = 401): Promise<string> {
  const out = await a.authenticate(r);
  if (out.ok) throw new Error(`expected a ${status}, got ok (${out.auth?.principal ?? 'no auth'})`);
  expect(out.status).toBe(status);
  if (status === 401) expect(out.headers[0]).toBe('www-authenticate');
  return out.body;
}

async function allowed(a: Authenticator, r: SecurityRequest): Promise<Extract<AuthnOutcome, { ok: true }>> {
  const out = await a.authenticate(r);
  if (!out.ok) throw new Error(`expected ok, got 401 ${out.body}`);
  return out;
}

function header(headers: string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

let rsa: Signer;
let ec: Signer;
let other: Signer;
beforeAll(async () => {
  rsa = await signer('RS256', 'rsa-1');
  ec = await signer('ES256', 'ec-1');
  other = await signer('RS256', 'rsa-1'); // same kid as `rsa`, another key
});

describe('jwt authenticator: inline jwks', () => {
  let a: Authenticator;
  beforeAll(() => {
    a = createJwtAuthenticator([rule({ jwks: jwks(rsa.jwk, ec.jwk), audiences: ['api.example.com', 'https://other.example/'] })], log);
  });
  afterAll(() => a.close());

  it('a valid RS256 token gives the principal, audiences, presenter and claims, and the header is removed', async () => {
    const t = await token(rsa, { aud: ['api.example.com', 'x'], azp: 'web-client', groups: ['admin'] });
    const out = await allowed(a, req(bearer(t)));
    expect(out.auth).toMatchObject({
      principal: `${ISS}/alice`,
      audiences: ['api.example.com', 'x'],
      presenter: 'web-client',
      claims: { iss: ISS, sub: 'alice', groups: ['admin'] },
    });
    expect(header(out.headers, 'authorization')).toBeUndefined();
    expect(out.headers).toEqual(['host', 'h.example', 'x-other', '1']);
  });

  it('a valid ES256 token; aud as a string; no azp', async () => {
    const t = await token(ec, { aud: 'api.example.com' });
    const out = await allowed(a, req(bearer(t)));
    expect(out.auth).toMatchObject({ principal: `${ISS}/alice`, audiences: ['api.example.com'], presenter: '' });
  });

  it('audiences are compared without scheme and trailing slash (jwt_verify_lib)', async () => {
    await allowed(a, req(bearer(await token(rsa, { aud: 'http://api.example.com/' }))));
    await allowed(a, req(bearer(await token(rsa, { aud: 'other.example' }))));
  });

  it('no token: allowed, no identity, headers untouched, answered synchronously', () => {
    const headers = ['host', 'h.example', 'authorization', 'Basic dXNlcjpwdw=='];
    const out = a.authenticate(req(headers));
    expect(out).not.toBeInstanceOf(Promise);
    expect(out).toEqual({ ok: true, auth: null, headers });
    expect(a.authenticate(req(['host', 'h']))).toEqual({ ok: true, auth: null, headers: ['host', 'h'] });
  });

  it('expired (beyond the 60 s skew) and not yet valid', async () => {
    expect(await denied(a, req(bearer(await token(rsa, { aud: 'api.example.com', exp: now() - 120 }))))).toBe('Jwt is expired');
    await allowed(a, req(bearer(await token(rsa, { aud: 'api.example.com', exp: now() - 30 }))));
    expect(await denied(a, req(bearer(await token(rsa, { aud: 'api.example.com', nbf: now() + 120 }))))).toBe(JWT_ERRORS.notYetValid);
    await allowed(a, req(bearer(await token(rsa, { aud: 'api.example.com', nbf: now() + 30 }))));
  });

  it('an issuer no rule has, or no issuer', async () => {
    expect(await denied(a, req(bearer(await token(rsa, { iss: 'https://evil.example', aud: 'api.example.com' }))))).toBe(
      'Jwt issuer is not configured',
    );
    expect(await denied(a, req(bearer(await token(rsa, { iss: undefined, aud: 'api.example.com' }))))).toBe('Jwt issuer is not configured');
  });

  it('wrong or missing audience', async () => {
    expect(await denied(a, req(bearer(await token(rsa, { aud: 'elsewhere' }))), 403)).toBe('Audiences in Jwt are not allowed');
    expect(await denied(a, req(bearer(await token(rsa, {}))), 403)).toBe('Audiences in Jwt are not allowed');
  });

  it('bad signature, unknown kid, and an alg no key has', async () => {
    expect(await denied(a, req(bearer(await token(other, { aud: 'api.example.com' }))))).toBe('Jwt verification fails');
    const t = await token(rsa, { aud: 'api.example.com' });
    const [h, p, s] = t.split('.') as [string, string, string];
    const tampered = `${h}.${Buffer.from(JSON.stringify({ iss: ISS, sub: 'root', aud: 'api.example.com', exp: now() + 60 })).toString('base64url')}.${s}`;
    expect(await denied(a, req(bearer(tampered)))).toBe('Jwt verification fails');
    expect(p).toBeTruthy();
    expect(await denied(a, req(bearer(await token(rsa, { aud: 'api.example.com' }, { kid: 'nope' }))))).toBe(
      "Jwks doesn't have key to match kid or alg from Jwt",
    );
    const hs = await new SignJWT({ iss: ISS, aud: 'api.example.com' }).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).sign(new Uint8Array(32));
    expect(await denied(a, req(bearer(hs)))).toBe("Jwks doesn't have key to match kid or alg from Jwt");
  });

  it('a token without kid is tried against every key', async () => {
    await allowed(a, req(bearer(await token(ec, { aud: 'api.example.com' }, { kid: undefined }))));
  });

  it('malformed tokens', async () => {
    expect(await denied(a, req(bearer('not-a-jwt')))).toBe('Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    expect(await denied(a, req(bearer('a.b.c.d')))).toBe(JWT_ERRORS.badFormat);
    expect(await denied(a, req(bearer('e30.e30.')))).toBe('Jwt header [alg] field is required and must be a string');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.e30.`;
    expect(await denied(a, req(bearer(none)))).toBe('Jwt header [alg] is not supported');
    const hdr = Buffer.from('{"alg":"RS256"}').toString('base64url');
    expect(await denied(a, req(bearer(`${hdr}.bm90IGpzb24.sig`)))).toBe('Jwt payload is an invalid JSON');
    expect(await denied(a, req(bearer(`bm90IGpzb24.e30.sig`)))).toBe('Jwt header is an invalid JSON');
  });

  it('every token present must verify: a good header token does not cover a bad access_token', async () => {
    const good = await token(rsa, { aud: 'api.example.com' });
    expect(await denied(a, req(bearer(good), `access_token=${await token(other, { aud: 'api.example.com' })}`))).toBe(
      'Jwt verification fails',
    );
    const out = await allowed(a, req(bearer(good), `a=1&access_token=${good}`));
    expect(out.auth?.principal).toBe(`${ISS}/alice`);
  });

  it('default locations: the access_token query parameter (kept: Envoy only removes headers)', async () => {
    const t = await token(ec, { aud: 'api.example.com' });
    const headers = ['host', 'h.example'];
    const out = await allowed(a, req(headers, `?x=1&access_token=${t}`));
    expect(out.auth?.principal).toBe(`${ISS}/alice`);
    expect(out.headers).toEqual(headers);
    // Authorization without the Bearer prefix is no token.
    expect(a.authenticate(req(['authorization', t]))).toMatchObject({ ok: true, auth: null });
  });
});

describe('jwt authenticator: locations and outputs', () => {
  it('from_headers with a prefix, from_params, from_cookies; the token header is removed unless forward_original_token', async () => {
    const a = createJwtAuthenticator(
      [
        rule({ jwks: jwks(rsa.jwk), from_headers: [{ name: 'X-Jwt-Assertion', prefix: 'Token ' }], from_params: ['jwt'], from_cookies: ['session'] }),
        rule({ issuer: ISS2, jwks: jwks(ec.jwk), from_headers: [{ name: 'x-forwarded-jwt', prefix: '' }], forward_original_token: true }),
      ],
      log,
    );
    const t = await token(rsa, {});
    let out = await allowed(a, req(['x-jwt-assertion', `Token ${t}`, 'x-a', 'b']));
    expect(out.auth?.principal).toBe(`${ISS}/alice`);
    expect(out.headers).toEqual(['x-a', 'b']);

    out = await allowed(a, req(['x-a', 'b'], `jwt=${t}`));
    expect(out.auth?.principal).toBe(`${ISS}/alice`);

    out = await allowed(a, req(['cookie', `theme=dark; session=${t}; x=y`]));
    expect(out.auth?.principal).toBe(`${ISS}/alice`);
    expect(header(out.headers, 'cookie')).toContain(t); // cookies are not removed

    // The default locations are not read when a rule names its own.
    expect(a.authenticate(req(bearer(t)))).toMatchObject({ ok: true, auth: null });
    expect(a.authenticate(req([], `access_token=${t}`))).toMatchObject({ ok: true, auth: null });

    // Prefix missing: no token.
    expect(a.authenticate(req(['x-jwt-assertion', t]))).toMatchObject({ ok: true, auth: null });

    // forward_original_token keeps the header.
    const t2 = await token(ec, { iss: ISS2, sub: 'bob' });
    out = await allowed(a, req(['x-forwarded-jwt', t2]));
    expect(out.auth?.principal).toBe(`${ISS2}/bob`);
    expect(header(out.headers, 'x-forwarded-jwt')).toBe(t2);

    // A token of ISS2 where only ISS's rule reads: its issuer is not configured for that location.
    expect(await denied(a, req(['x-jwt-assertion', `Token ${t2}`]))).toBe('Jwt issuer is not configured');
    a.close();
  });

  it('output_payload_to_header and output_claim_to_headers (string, number, boolean, nested; others skipped); spoofed values replaced', async () => {
    const a = createJwtAuthenticator(
      [
        rule({
          jwks: jwks(rsa.jwk),
          output_payload_to_header: 'X-Jwt-Payload',
          output_claim_to_headers: [
            { header: 'x-sub', claim: 'sub' },
            { header: 'x-level', claim: 'level' },
            { header: 'x-admin', claim: 'admin' },
            { header: 'x-team', claim: 'org.team' },
            { header: 'x-groups', claim: 'groups' },
            { header: 'x-missing', claim: 'nope' },
          ],
        }),
      ],
      log,
    );
    const t = await token(rsa, { level: 3, admin: false, org: { team: 'core' }, groups: ['a', 'b'] });
    const out = await allowed(a, req(['authorization', `Bearer ${t}`, 'x-sub', 'spoofed']));
    const payload = JSON.parse(Buffer.from(header(out.headers, 'x-jwt-payload')!, 'base64url').toString('utf8'));
    expect(payload).toMatchObject({ iss: ISS, sub: 'alice', level: 3 });
    expect(header(out.headers, 'x-sub')).toBe('alice');
    expect(out.headers.filter((h) => h === 'x-sub')).toHaveLength(1);
    expect(header(out.headers, 'x-level')).toBe('3');
    expect(header(out.headers, 'x-admin')).toBe('false');
    expect(header(out.headers, 'x-team')).toBe('core');
    expect(header(out.headers, 'x-groups')).toBeUndefined();
    expect(header(out.headers, 'x-missing')).toBeUndefined();
    expect(header(out.headers, 'authorization')).toBeUndefined();
    a.close();
  });

  it('headers the rules write are removed from every request first, token or not (Envoy sanitizes them), so they cannot be spoofed', async () => {
    const a = createJwtAuthenticator([rule({ jwks: jwks(rsa.jwk), output_payload_to_header: 'x-jwt-payload', output_claim_to_headers: [{ header: 'x-team', claim: 'team' }] })], log);
    const spoofed = ['host', 'h.example', 'x-team', 'admins', 'x-jwt-payload', 'e30', 'x-other', '1'];
    // No token: answered synchronously, without the spoofed headers.
    expect(a.authenticate(req(spoofed))).toEqual({ ok: true, auth: null, headers: ['host', 'h.example', 'x-other', '1'] });
    // A token without the claim: the spoofed header does not survive either.
    const out = await allowed(a, req(['authorization', `Bearer ${await token(rsa, {})}`, ...spoofed]));
    expect(header(out.headers, 'x-team')).toBeUndefined();
    expect(header(out.headers, 'x-jwt-payload')).not.toBe('e30');
    // Nothing to remove: the request's own list, untouched.
    const clean = ['host', 'h.example'];
    expect((a.authenticate(req(clean)) as AuthnOutcome & { ok: true }).headers).toBe(clean);
    a.close();
  });

  it('request.auth.claims: space-delimited scope and permission (and space_delimited_claims) are lists, as Envoy normalizes the payload', async () => {
    const a = createJwtAuthenticator([rule({ jwks: jwks(rsa.jwk), space_delimited_claims: ['roles'] })], log);
    const t = await token(rsa, { scope: 'read  write', permission: 'p1', roles: 'a b', other: 'x y', org: { scope: 'n m' }, empty: '', level: 3 });
    const out = await allowed(a, req(bearer(t)));
    expect(out.auth!.claims).toMatchObject({ scope: ['read', 'write'], permission: ['p1'], roles: ['a', 'b'], other: 'x y', org: { scope: 'n m' }, empty: '', level: 3 });
    // Without the rule's list, only Istio's defaults.
    const b = createJwtAuthenticator([rule({ jwks: jwks(rsa.jwk) })], log);
    expect((await allowed(b, req(bearer(t)))).auth!.claims).toMatchObject({ scope: ['read', 'write'], roles: 'a b' });
    a.close();
    b.close();
  });

  it('no rules: everything passes untouched', () => {
    const a = createJwtAuthenticator([], log);
    const headers = bearer('garbage');
    expect(a.authenticate(req(headers))).toEqual({ ok: true, auth: null, headers });
  });

  it('an invalid inline jwks fails its tokens, not the authenticator', async () => {
    const a = createJwtAuthenticator([rule({ jwks: '{"keys": "nope"}' })], log);
    expect(await denied(a, req(bearer(await token(rsa, {}))))).toBe("Jwks doesn't have key to match kid or alg from Jwt");
  });
});

// ---------------------------------------------------------------------------------------------
// jwks_uri

type Mode = 'ok' | 'hang' | 'error' | 'reset';

class JwksServer {
  mode: Mode = 'ok';
  body = '';
  delayMs = 0;
  hits = 0;
  readonly server = http.createServer((rq, rs) => {
    this.hits++;
    const mode = this.mode;
    if (mode === 'hang') return; // never answers
    if (mode === 'reset') {
      rq.socket.destroy();
      return;
    }
    const answer = (): void => {
      if (mode === 'error') rs.writeHead(503).end('down');
      else rs.writeHead(200, { 'content-type': 'application/json' }).end(this.body);
    };
    if (this.delayMs) setTimeout(answer, this.delayMs);
    else answer();
  });

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks.json`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

describe('jwt authenticator: jwks_uri', () => {
  let srv: JwksServer;
  let uri: string;
  let cache: JwksCache;
  const open: Authenticator[] = [];
  const make = (rules: JwtRuleConfig[]): Authenticator => {
    const a = createJwtAuthenticator(rules, log, { jwksCache: cache });
    open.push(a);
    return a;
  };

  beforeAll(async () => {
    srv = new JwksServer();
    uri = await srv.start();
  });
  afterAll(() => srv.stop());
  afterEach(() => {
    for (const a of open.splice(0)) a.close();
    cache.close();
    srv.mode = 'ok';
    srv.delayMs = 0;
    srv.hits = 0;
  });

  it('fetches at creation (warm-up), once for all requests and rules, and verifies', async () => {
    cache = new JwksCache();
    srv.body = jwks(rsa.jwk);
    make([rule({ jwks_uri: uri }), rule({ jwks_uri: uri, from_headers: [{ name: 'x-token', prefix: '' }] })]);
    await until(() => cache.get(uri)?.current != null);
    expect(srv.hits).toBe(1);
    const a = open[0]!;
    const t = await token(rsa, {});
    for (let i = 0; i < 5; i++) expect((await allowed(a, req(bearer(t)))).auth?.principal).toBe(`${ISS}/alice`);
    expect(await denied(a, req(bearer(await token(other, {}))))).toBe('Jwt verification fails');
    expect(srv.hits).toBe(1);
  });

  it('inline jwks wins over jwks_uri (nothing fetched)', async () => {
    cache = new JwksCache();
    srv.body = jwks(rsa.jwk);
    const a = make([rule({ jwks: jwks(ec.jwk), jwks_uri: uri })]);
    await allowed(a, req(bearer(await token(ec, {}))));
    expect(await denied(a, req(bearer(await token(rsa, {}))))).toBe("Jwks doesn't have key to match kid or alg from Jwt");
    await sleep(50);
    expect(srv.hits).toBe(0);
  });

  it('a token arriving before the keys waits for the fetch', async () => {
    cache = new JwksCache();
    srv.body = jwks(rsa.jwk);
    srv.delayMs = 150;
    const a = make([rule({ jwks_uri: uri, timeout_ms: 3000 })]);
    expect((await allowed(a, req(bearer(await token(rsa, {}))))).auth?.principal).toBe(`${ISS}/alice`);
    expect(srv.hits).toBe(1);
  });

  it('a hanging JWKS endpoint: token requests wait at most the timeout, tokenless and other-issuer requests not at all', async () => {
    cache = new JwksCache({ retryMinMs: 10_000 });
    srv.mode = 'hang';
    // A long timeout, so "waits for it" and "does not wait" are far apart even on a loaded machine.
    const a = make([rule({ jwks_uri: uri, timeout_ms: 2000 }), rule({ issuer: ISS2, jwks: jwks(ec.jwk) })]);
    const t = await token(rsa, {});
    const t2 = await token(ec, { iss: ISS2 });

    const started = Date.now();
    let settled = false;
    const pending = Promise.resolve(a.authenticate(req(bearer(t)))).finally(() => (settled = true));
    // While the fetch hangs: no token → synchronous answer; ISS2's inline keys → answered before it.
    const plain = a.authenticate(req(['host', 'h']));
    expect(plain).not.toBeInstanceOf(Promise);
    expect(plain).toMatchObject({ ok: true, auth: null });
    expect((await allowed(a, req(bearer(t2)))).auth?.principal).toBe(`${ISS2}/alice`);
    expect(settled).toBe(false);

    const out = await pending;
    const waited = Date.now() - started;
    expect(out).toMatchObject({ ok: false, status: 401, body: 'Jwks remote fetch is failed' });
    expect(waited).toBeGreaterThanOrEqual(1900);
    expect(waited).toBeLessThan(15_000);

    // Right after the failure, the next token request does not wait for another timeout.
    const t1 = Date.now();
    expect(await denied(a, req(bearer(t)))).toBe('Jwks remote fetch is failed');
    expect(Date.now() - t1).toBeLessThan(1000);
  });

  it('keeps the last good keys when refreshes fail or hang, and picks up rotated keys when it is back', async () => {
    cache = new JwksCache({ cacheDurationMs: 100, retryMinMs: 20 });
    srv.body = jwks(rsa.jwk);
    const a = make([rule({ jwks_uri: uri, timeout_ms: 200 })]);
    await until(() => cache.get(uri)?.current != null);
    const t = await token(rsa, {});

    for (const mode of ['error', 'reset', 'hang'] as const) {
      srv.mode = mode;
      const hits = srv.hits;
      await until(() => srv.hits >= hits + 2); // refreshes were tried and failed
      expect(cache.get(uri)!.failures).toBeGreaterThan(0);
      const t0 = Date.now();
      expect((await allowed(a, req(bearer(t)))).auth?.principal).toBe(`${ISS}/alice`);
      expect(Date.now() - t0).toBeLessThan(150); // the last good keys, no waiting
    }

    // Rotation: the endpoint comes back with another key.
    const rotated = await signer('ES256', 'ec-2');
    srv.body = jwks(rotated.jwk);
    srv.mode = 'ok';
    await until(() => cache.get(uri)!.failures === 0);
    await allowed(a, req(bearer(await token(rotated, {}))));
    expect(await denied(a, req(bearer(t)))).toBe("Jwks doesn't have key to match kid or alg from Jwt");
  });

  it('an endpoint that is down at start: 401 Jwks remote fetch is failed, then recovery by the background retry', async () => {
    cache = new JwksCache({ retryMinMs: 50 });
    srv.mode = 'error';
    srv.body = jwks(rsa.jwk);
    const a = make([rule({ jwks_uri: uri, timeout_ms: 500 })]);
    const t = await token(rsa, {});
    expect(await denied(a, req(bearer(t)))).toBe('Jwks remote fetch is failed');
    srv.mode = 'ok';
    await until(() => cache.get(uri)?.current != null);
    await allowed(a, req(bearer(t)));
  });

  it('an invalid JWKS document counts as a failed fetch', async () => {
    cache = new JwksCache({ retryMinMs: 10_000 });
    srv.body = '{"keys":[{"kty":"RSA"}]}';
    const a = make([rule({ jwks_uri: uri, timeout_ms: 500 })]);
    expect(await denied(a, req(bearer(await token(rsa, {}))))).toBe('Jwks remote fetch is failed');
    expect(cache.get(uri)!.lastError).toMatch(/valid public key/);
  });

  it('a JWKS document over the size limit counts as a failed fetch', async () => {
    cache = new JwksCache({ retryMinMs: 10_000, maxBytes: 64 });
    srv.body = jwks(rsa.jwk);
    const a = make([rule({ jwks_uri: uri, timeout_ms: 500 })]);
    expect(await denied(a, req(bearer(await token(rsa, {}))))).toBe('Jwks remote fetch is failed');
    expect(cache.get(uri)!.lastError).toMatch(/larger than 64 bytes/);
  });

  it('close() stops the refreshes; a later authenticator reuses the cached keys', async () => {
    cache = new JwksCache({ cacheDurationMs: 60, retryMinMs: 20 });
    srv.body = jwks(rsa.jwk);
    const a = make([rule({ jwks_uri: uri })]);
    await until(() => srv.hits >= 3); // refreshing
    a.close();
    await sleep(80); // a refresh in flight may still land
    const hits = srv.hits;
    await sleep(300);
    expect(srv.hits).toBe(hits);

    // Next config version, same URI, endpoint now down: the cached keys still serve.
    srv.mode = 'error';
    const b = make([rule({ jwks_uri: uri })]);
    await allowed(b, req(bearer(await token(rsa, {}))));
  });
});
