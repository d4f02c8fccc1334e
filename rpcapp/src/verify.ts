/** `userverify.UserVerify/VerifyUser`: the seed's verification call. */
import * as grpc from "@grpc/grpc-js";
import type { Fault } from "../../lib/fault.ts";

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

/** verifyUser with a drill's injected delay and errors (lib/fault.ts); verifyUser itself when off. */
export function verifyUserWith(fault: Fault | undefined): grpc.handleUnaryCall<VerifyRequest, VerifyReply> {
  if (!fault?.enabled) return verifyUser;
  return (call, callback) => {
    const answer = () => {
      // Counted per connection, i.e. per gateway: each sees exactly its share (lib/fault.ts).
      if (fault.fails(call.getPeer()))
        callback({
          code: grpc.status.INTERNAL,
          details: "injected fault (FAULT_ERROR_PERCENT): this replica runs a release drill",
        });
      else verifyUser(call, callback);
    };
    if (fault.delayMs > 0) setTimeout(answer, fault.delayMs);
    else answer();
  };
}
