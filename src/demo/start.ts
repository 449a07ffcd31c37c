// `npm start`: the bundled example, self-contained. Starts the three demo product page versions on
// 127.0.0.1:19081-19083 (what the WorkloadEntries in config/demo.yaml point at), then runs the
// gateway on config/ exactly as `gatehouse run --config config/` would.
import { createServer, type Server } from 'node:http';
import { main } from '../cli.js';

const VERSIONS: Array<[string, number]> = [
  ['v1', 19081],
  ['v2', 19082],
  ['v3', 19083],
];

function startVersion(version: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const body = `productpage ${version} (demo upstream 127.0.0.1:${port})\n${req.method} ${req.url} host=${req.headers.host} x-request-id=${req.headers['x-request-id'] ?? '-'}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const servers = await Promise.all(VERSIONS.map(([v, p]) => startVersion(v, p)));
process.stderr.write(`demo upstreams: productpage v1/v2/v3 on 127.0.0.1:19081-19083\ntry: curl -H 'Host: demo.local' http://127.0.0.1:8080/\n`);
const code = await main(['run', '--config', 'config/', ...process.argv.slice(2)]);
for (const s of servers) s.close();
process.exit(code);
