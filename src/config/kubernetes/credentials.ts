// How Gatehouse reaches the Kubernetes API: `--kubeconfig`, else `KUBECONFIG`, else the in-cluster
// service account, else `~/.kube/config` (a developer's machine). @kubernetes/client-node reads the
// kubeconfig and applies its credentials as kubectl would (CA, token, client certificate, exec
// plugins); in a cluster its token file is re-read (every minute) so a rotated projected token is
// picked up, and the cluster CA file is read again for each request. The package is heavy (0.7-0.9 s
// to import, ~75 MB), so it is imported here, on first use, and only with `--kubernetes`.
import { existsSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import type { RequestOptions } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface KubeConnection {
  /** `https://host:port` (no trailing slash). */
  server: string;
  /** Where the credentials came from, for the logs. */
  origin: string;
  /** TLS and auth options for one request: read again each time (rotated tokens, exec plugins). */
  requestOptions(): Promise<RequestOptions>;
}

export class KubeCredentialsError extends Error {}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type ClientNode = typeof import('@kubernetes/client-node');
let clientNode: Promise<ClientNode> | null = null;

/** @kubernetes/client-node, imported once. */
export function loadClientNode(): Promise<ClientNode> {
  return (clientNode ??= import('@kubernetes/client-node'));
}

export interface CredentialOptions {
  kubeconfig?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Where the in-cluster service account files are (tests); default /var/run/secrets/... */
  serviceAccountPrefix?: string;
}

export async function connect(o: CredentialOptions = {}): Promise<KubeConnection> {
  const env = o.env ?? process.env;
  const k8s = await loadClientNode();
  const kc = new k8s.KubeConfig();
  let origin: string;
  try {
    if (o.kubeconfig) {
      if (!existsSync(o.kubeconfig)) throw new KubeCredentialsError(`--kubeconfig ${o.kubeconfig}: no such file`);
      kc.loadFromFile(o.kubeconfig);
      origin = `--kubeconfig ${o.kubeconfig}`;
    } else if (env.KUBECONFIG) {
      // As kubectl: the files are merged, the first one to set a value wins; missing ones are skipped.
      const files = env.KUBECONFIG.split(':').filter((f) => f && existsSync(f));
      if (files.length === 0) throw new KubeCredentialsError(`KUBECONFIG=${env.KUBECONFIG}: no such file`);
      kc.loadFromFile(files[0]!);
      for (const f of files.slice(1)) {
        const more = new k8s.KubeConfig();
        more.loadFromFile(f);
        kc.mergeConfig(more);
      }
      origin = `KUBECONFIG=${env.KUBECONFIG}`;
    } else if (env.KUBERNETES_SERVICE_HOST && existsSync(`${o.serviceAccountPrefix ?? ''}${SERVICE_ACCOUNT_DIR}/token`)) {
      // As client-go's rest.InClusterConfig: the token file is re-read (client-node: every minute),
      // the CA file at each connection.
      const dir = `${o.serviceAccountPrefix ?? ''}${SERVICE_ACCOUNT_DIR}`;
      const host = isIPv6(env.KUBERNETES_SERVICE_HOST) ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
      kc.loadFromClusterAndUser(
        { name: 'inCluster', server: `https://${host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`, caFile: `${dir}/ca.crt`, skipTLSVerify: false },
        { name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile: `${dir}/token` } } },
      );
      origin = 'the in-cluster service account';
    } else if (existsSync(join(homedir(), '.kube', 'config'))) {
      kc.loadFromFile(join(homedir(), '.kube', 'config'));
      origin = '~/.kube/config';
    } else {
      throw new KubeCredentialsError('no Kubernetes credentials: give --kubeconfig <file>, set KUBECONFIG, or run in a pod with a service account (KUBERNETES_SERVICE_HOST and its token)');
    }
  } catch (err) {
    if (err instanceof KubeCredentialsError) throw err;
    throw new KubeCredentialsError(`cannot read the kubeconfig: ${(err as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw new KubeCredentialsError(`${origin}: the current context (${kc.getCurrentContext() || 'none'}) names no cluster server`);
  const server = cluster.server.replace(/\/+$/, '');
  return {
    server,
    origin: `${origin}${kc.getCurrentContext() ? ` (context ${kc.getCurrentContext()})` : ''}`,
    async requestOptions() {
      const opts: RequestOptions = { headers: {} };
      await kc.applyToHTTPSOptions(opts);
      return opts;
    },
  };
}
