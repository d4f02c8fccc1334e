/**
 * gRPC status → HTTP status, the mapping grpc-gateway uses (runtime.HTTPStatusFromCode), so
 * clients that know one gateway's behaviour know Portico's.
 * https://github.com/grpc-ecosystem/grpc-gateway/blob/main/runtime/errors.go
 */
import { status as Status } from "@grpc/grpc-js";

const HTTP_BY_GRPC: Record<number, number> = {
  [Status.OK]: 200,
  [Status.CANCELLED]: 499,
  [Status.UNKNOWN]: 500,
  [Status.INVALID_ARGUMENT]: 400,
  [Status.DEADLINE_EXCEEDED]: 504,
  [Status.NOT_FOUND]: 404,
  [Status.ALREADY_EXISTS]: 409,
  [Status.PERMISSION_DENIED]: 403,
  [Status.RESOURCE_EXHAUSTED]: 429,
  [Status.FAILED_PRECONDITION]: 400,
  [Status.ABORTED]: 409,
  [Status.OUT_OF_RANGE]: 400,
  [Status.UNIMPLEMENTED]: 501,
  [Status.INTERNAL]: 500,
  [Status.UNAVAILABLE]: 503,
  [Status.DATA_LOSS]: 500,
  [Status.UNAUTHENTICATED]: 401,
};

export function httpStatusFromGrpc(code: number): number {
  return HTTP_BY_GRPC[code] ?? 500;
}

/** "INVALID_ARGUMENT" for 3, etc. */
export function grpcCodeName(code: number): string {
  return (Status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}
