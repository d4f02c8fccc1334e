"""An independent client for rpcapp: Debian's python3-grpcio, no generated code, no protoc.

Messages are encoded and decoded by hand in the protobuf wire format, so this checks rpcapp
against the contract in proto/ rather than against grpc-js talking to itself.

Usage: python3 python_client.py HOST:PORT
Prints one JSON object with what it saw; exits 1 (with the reason) if a reply is wrong.
"""
import json
import sys

import grpc


def encode_varint(value):
    # int32 negatives are sign-extended to 64 bits on the wire (10 bytes).
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number, value):
    return encode_varint(number << 3 | 0) + encode_varint(value)


def field_string(number, text):
    data = text.encode("utf-8")
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data


def decode_fields(data):
    """{field number: value} for varint (int) and length-delimited (bytes) fields."""
    fields, pos = {}, 0

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number] = varint()
        elif wire_type == 2:
            length = varint()
            fields[number] = data[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire_type} for field {number}")
    return fields


SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def verify_request(user_id, token):
    # proto3 omits default values; rpcapp must read absent fields as 0 / "".
    body = b""
    if user_id:
        body += field_varint(1, user_id)
    if token:
        body += field_string(2, token)
    return body


def main(target):
    seen = {}
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        # No serializers: requests and replies are raw bytes.
        verify = channel.unary_unary("/userverify.UserVerify/VerifyUser")
        check = channel.unary_unary("/grpc.health.v1.Health/Check")

        reply, call = verify.with_call(verify_request(121, "a$$"), timeout=5, metadata=[("x-request-id", "py-req-1")])
        headers = dict(call.initial_metadata())
        seen["verify"] = {
            "message": decode_fields(reply).get(1, b"").decode("utf-8"),
            "x-served-by": headers.get("x-served-by"),
            "x-service-version": headers.get("x-service-version"),
            "x-request-id": headers.get("x-request-id"),
        }

        seen["invalid"] = []
        for user_id, token in [(0, "a$$"), (-5, "a$$"), (7, "")]:
            try:
                verify(verify_request(user_id, token), timeout=5)
                seen["invalid"].append({"id": user_id, "code": "OK"})
            except grpc.RpcError as err:
                seen["invalid"].append({"id": user_id, "token": token, "code": err.code().name, "details": err.details()})

        seen["health"] = {}
        for service in ["", "userverify.UserVerify"]:
            reply = check(field_string(1, service) if service else b"", timeout=5)
            seen["health"][service] = SERVING_STATUS[decode_fields(reply).get(1, 0)]
        try:
            check(field_string(1, "no.such.Service"), timeout=5)
            seen["health"]["no.such.Service"] = "OK"
        except grpc.RpcError as err:
            seen["health"]["no.such.Service"] = err.code().name

    print(json.dumps(seen))
    problems = []
    if seen["verify"]["message"] != "Verified: 121":
        problems.append(f"VerifyUser replied {seen['verify']['message']!r}")
    if seen["verify"]["x-request-id"] != "py-req-1":
        problems.append("x-request-id was not echoed")
    if any(r["code"] != "INVALID_ARGUMENT" for r in seen["invalid"]):
        problems.append(f"invalid requests were not all INVALID_ARGUMENT: {seen['invalid']}")
    if seen["health"] != {"": "SERVING", "userverify.UserVerify": "SERVING", "no.such.Service": "NOT_FOUND"}:
        problems.append(f"health replied {seen['health']}")
    if problems:
        print("; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
