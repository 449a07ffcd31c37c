// gRPC services without protos for the tests: every message is raw bytes (Buffer in, Buffer out).
import * as grpc from '@grpc/grpc-js';

const raw = (b: Buffer): Buffer => b;

/** A service definition whose methods carry raw bytes: `{ Unary: '/echo.Echo/Unary', Chat: ['/echo.Echo/Chat', true, true] }`. */
export function rawService(methods: Record<string, string | [path: string, requestStream: boolean, responseStream: boolean]>): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  for (const [name, m] of Object.entries(methods)) {
    const [path, requestStream, responseStream] = typeof m === 'string' ? [m, false, false] : m;
    def[name] = { path, requestStream, responseStream, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw };
  }
  return def as grpc.ServiceDefinition;
}
