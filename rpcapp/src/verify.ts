/** `userverify.UserVerify/VerifyUser`: the seed's verification call. */
import * as grpc from "@grpc/grpc-js";

/** Wire shapes of proto/userverify.proto (proto3 defaults fill absent fields: 0 and ""). */
export interface VerifyRequest {
  id: number;
  token: string;
}

export interface VerifyReply {
  message: string;
}

/** What is wrong with a request, one entry per field; empty when it is valid. */
export function verifyRequestErrors(req: VerifyRequest): string[] {
  const errors: string[] = [];
  if (!Number.isInteger(req.id) || req.id <= 0) errors.push(`id must be a positive integer (got ${req.id})`);
  if (typeof req.token !== "string" || req.token.length === 0) errors.push("token must not be empty");
  return errors;
}

export const verifyUser: grpc.handleUnaryCall<VerifyRequest, VerifyReply> = (call, callback) => {
  const errors = verifyRequestErrors(call.request);
  if (errors.length > 0) {
    callback({ code: grpc.status.INVALID_ARGUMENT, details: `invalid VerifyRequest: ${errors.join("; ")}` });
    return;
  }
  callback(null, { message: `Verified: ${call.request.id}` });
};
