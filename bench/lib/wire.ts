// What travels between the load generators, the targets and the upstream: the Host names, the
// bodies the upstream answers with, the gRPC method (raw bytes, no protos), the WebSocket message.
import type * as grpc from '@grpc/grpc-js';

export const HOST = 'bench.local';
export const SMALL_BODY = Buffer.alloc(100, 'g'); // GET /
export const BIG_BODY = Buffer.alloc(16 * 1024, 'k'); // GET /16k
export const POST_SIZE = 64 * 1024;
export const GRPC_HOST = 'grpc.bench.local'; // :authority of the gRPC clients (the gateway routes on it)
export const GRPC_PATH = '/bench.Bench/Echo';
export const GRPC_REQUEST = Buffer.alloc(100, 'q');
export const GRPC_CHANNELS = 4; // separate grpc.Client objects, one HTTP/2 connection each
export const GRPC_MAX_INFLIGHT = 64; // total calls in flight: min(BENCH_CONNECTIONS, this)
export const WS_MESSAGE = Buffer.alloc(100, 'w'); // ws: each connection sends this and waits for its echo

// gRPC without protos: messages are raw bytes (identity serialisers).
export const raw = (b: Buffer): Buffer => b;
export const GRPC_SERVICE: grpc.ServiceDefinition = {
  Echo: { path: GRPC_PATH, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};
