// Hosts the Kubernetes source (src/config/kubernetes/source.ts) on this thread - the configuration
// thread, or the main thread when none can start - and makes its objects what `--kubernetes`
// configuration jobs run on (config-job.ts). Loaded only with `--kubernetes`.
import { KubernetesSource, type KubeSourceEvent, type KubeSourceOptions } from '../config/kubernetes/source.js';
import { setKubeJobState } from './config-job.js';
import { KubeJobState } from './kube-job.js';

/** The source's events, and `failed` when it cannot start (no credentials). */
export type KubeHostEvent = KubeSourceEvent | { type: 'failed'; message: string };

export interface KubeHost {
  stop(): Promise<void>;
}

export async function hostKubernetes(opts: KubeSourceOptions, emit: (e: KubeHostEvent) => void): Promise<KubeHost> {
  const source = new KubernetesSource(opts, emit);
  setKubeJobState(new KubeJobState(source));
  try {
    await source.start();
  } catch (err) {
    emit({ type: 'failed', message: (err as Error).message });
  }
  return {
    async stop() {
      setKubeJobState(null);
      await source.stop();
    },
  };
}
