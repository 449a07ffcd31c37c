// Target `nginx`: nginx from PATH as a reverse proxy to the same upstream (keep-alive), its config
// and pid/log/temp files in the run's temp folder: the plain HTTP server (with the policy and
// WebSocket locations), a TLS server for https, an h2c server with grpc_pass, and for routes1k
// 1,000 server blocks.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { policyNginx, ROUTES_HEADER, routesHost } from '../configs.js';
import { freePorts, waitReady } from '../net.js';
import { findOnPath, stopChild, tail, track } from '../proc.js';
import type { CertPaths, Target } from '../types.js';
import type { Upstream } from '../upstream.js';
import { HOST } from '../wire.js';

/** nginx as a reverse proxy: one process, upstream keepalive. Undefined (with a note) if unusable. */
export interface NginxOptions {
  routes: number; // extra server blocks for vs-<i>.bench.local (routes1k)
  workerConnections: number;
  name: string; // temp sub-folder and child name
  workers: number; // worker_processes (the gateway's --workers)
}

export async function startNginx(
  tmp: string,
  up: Upstream,
  cert: CertPaths | undefined,
  notes: string[],
  o: NginxOptions = { routes: 0, workerConnections: 1024, name: 'nginx', workers: 1 },
): Promise<{ target: Target; version: string } | undefined> {
  const bin = findOnPath('nginx');
  if (!bin) {
    notes.push('nginx: not on PATH, skipped (the bench installs nothing).');
    return undefined;
  }
  // `nginx -v` prints its version to stderr.
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  let version = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim() || 'nginx';
  version = version.replace(/^nginx version:\s*/, '');

  const dir = path.join(tmp, o.name);
  fs.mkdirSync(dir);
  for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(dir, sub));
  const [port, tlsPort, grpcPort, h2Port] = (await freePorts(4)) as [number, number, number, number];
  // `http2 on;` exists from 1.25.1; before it (Debian 12 ships 1.22) the flag goes on `listen`.
  const [maj = 0, min = 0, patch = 0] = (/(\d+)\.(\d+)\.(\d+)/.exec(version)?.slice(1) ?? []).map(Number);
  const http2Directive = maj > 1 || (maj === 1 && (min > 25 || (min === 25 && patch >= 1)));
  const proxyToUpstream = `
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;`;
  const tlsServer = cert
    ? `
  server {
    listen 127.0.0.1:${tlsPort} ssl;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {${proxyToUpstream}
    }
  }`
    : '';
  // The h2 scenario: TLS with ALPN h2 (and http/1.1), the same proxying to the upstream.
  const h2Server = cert
    ? `
  server {
    listen 127.0.0.1:${h2Port} ssl${http2Directive ? ';\n    http2 on' : ' http2'};
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {${proxyToUpstream}
    }
  }`
    : '';
  const policy = policyNginx(up.port, port);
  // master_process off: the PID we start is the one process that serves (= "1 worker"), so its
  // /proc/<pid>/stat holds all of nginx's CPU. Every path points into the temp dir.
  // routes1k: one server block per VirtualService host; like the gateway's two header-matched
  // routes, a request without x-bench-variant a or b gets a 404.
  const routeServers: string[] = [];
  for (let i = 0; i < o.routes; i++) {
    routeServers.push(`
  server {
    listen 127.0.0.1:${port};
    server_name ${routesHost(i)};
    location / {
      if ($http_${ROUTES_HEADER.replace(/-/g, '_')} !~ ^[ab]$) { return 404; }${proxyToUpstream}
    }
  }`);
  }
  // One worker: no master (one process, as measured in PERFORMANCE.md); more: a master and N workers.
  const conf = `daemon off;
master_process ${o.workers > 1 ? 'on' : 'off'};
worker_processes ${o.workers};
${o.workerConnections > 1024 ? `worker_rlimit_nofile ${o.workerConnections + 100};
` : ''}pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${o.workerConnections}; }
http {
  server_names_hash_max_size 32768;
  server_names_hash_bucket_size 128;
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_body_buffer_size 128k;
  client_max_body_size 1m;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream bench_upstream {
    server 127.0.0.1:${up.port};
    keepalive 64;
    keepalive_requests 1000000;
  }
  upstream grpc_upstream {
    server 127.0.0.1:${up.grpcPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
${policy.http}
  server {
    listen 127.0.0.1:${port} default_server;
    location /ws {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 300s;
    }
    location / {${proxyToUpstream}
    }
  }${policy.server}${routeServers.join('')}${tlsServer}${h2Server}
  server {
    listen 127.0.0.1:${grpcPort}${http2Directive ? ';\n    http2 on' : ' http2'};
    location / {
      grpc_pass grpc://grpc_upstream;
    }
  }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confFile, conf);
  const logFile = path.join(dir, 'stderr.log');
  const log = fs.openSync(logFile, 'a');
  const proc = spawn(bin, ['-p', `${dir}/`, '-e', `${dir}/error.log`, '-c', confFile], { cwd: dir, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const child = track(o.name, proc, logFile);
  try {
    await waitReady(child, port, '/', HOST, 10_000);
  } catch (err) {
    notes.push(`nginx: failed to start, skipped: ${(err as Error).message.split('\n')[0]} ${tail(path.join(dir, 'error.log'), 3)}`);
    await stopChild(child);
    return undefined;
  }
  return { target: { name: 'nginx', port, grpcPort, ...(cert ? { tlsPort, h2Port } : {}), child }, version };
}
