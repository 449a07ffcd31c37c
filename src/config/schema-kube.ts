// Kubernetes kinds read only from the API (`--kubernetes`) and kept for the service registry:
// Service, EndpointSlice (discovery.k8s.io/v1) and the Pods behind them. The API server has already
// validated them; these schemas check the shape of the fields the registry reads and let every
// other field through (the objects are stored trimmed, see src/config/kubernetes/objects.ts).
import { any, int, list, looseObj, map, oneOf, str, type Schema } from './schema.js';

const envelope = { apiVersion: str(), kind: str(), metadata: any() };

/** `targetPort`: a port number or a container port name. */
const intOrString: Schema = {
  shape: { type: 'any' },
  check: (v, path, out) => {
    if (typeof v === 'string') return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) out.error(path, 'must be a port number or a port name');
  },
};

export const serviceDocument = looseObj({
  ...envelope,
  spec: looseObj({
    type: oneOf(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']),
    clusterIP: str(),
    clusterIPs: list(str()),
    externalName: str(),
    selector: map(str()),
    ports: list(looseObj({ name: str(), port: int(1, 65535), targetPort: intOrString, protocol: str(), appProtocol: str() })),
  }),
});

export const endpointSliceDocument = looseObj({
  ...envelope,
  addressType: oneOf(['IPv4', 'IPv6', 'FQDN']),
  endpoints: list(
    looseObj({
      addresses: list(str()),
      conditions: looseObj({ ready: any(), serving: any(), terminating: any() }),
      targetRef: looseObj({ kind: str(), name: str(), namespace: str() }),
      nodeName: str(),
      zone: str(),
    }),
  ),
  ports: list(looseObj({ name: str(), port: int(0, 65535), protocol: str(), appProtocol: str() })),
});

export const podDocument = looseObj({
  ...envelope,
  spec: looseObj({ nodeName: str(), serviceAccountName: str() }),
  status: looseObj({ phase: str(), podIP: str(), podIPs: list(looseObj({ ip: str() })) }),
});
