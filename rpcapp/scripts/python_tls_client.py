"""An independent mutual-TLS client for rpcapp: Debian's python3-grpcio (gRPC's C core and its own
TLS stack, not Node's), with the protobuf messages hand-encoded by rpcapp/test/python_client.py.

It calls VerifyUser and Health/Check with a client certificate, then tries VerifyUser once more
without one, which rpcapp must refuse at the handshake.

Usage: python3 python_tls_client.py HOST:PORT CA_FILE CERT_FILE KEY_FILE
Prints one JSON object with what it saw; exits 1 (with the reason) if a reply is wrong.
"""
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from python_client import SERVING_STATUS, decode_fields, verify_request  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main(target, ca_file, cert_file, key_file):
    ca = read(ca_file)
    seen = {}
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=read(key_file), certificate_chain=read(cert_file)
    )
    # The target is an IP address: the C core checks it against the certificate's IP names.
    with grpc.secure_channel(target, credentials) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        verify = channel.unary_unary("/userverify.UserVerify/VerifyUser")
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        reply, call = verify.with_call(verify_request(121, "a$$"), timeout=5, metadata=[("x-request-id", "py-tls-1")])
        seen["verify"] = {
            "message": decode_fields(reply).get(1, b"").decode("utf-8"),
            "x-request-id": dict(call.initial_metadata()).get("x-request-id"),
        }
        seen["health"] = SERVING_STATUS[decode_fields(check(b"", timeout=5)).get(1, 0)]

    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
        try:
            channel.unary_unary("/userverify.UserVerify/VerifyUser")(verify_request(121, "a$$"), timeout=5)
            seen["without_certificate"] = "OK"
        except grpc.RpcError as err:
            seen["without_certificate"] = err.code().name

    print(json.dumps(seen))
    problems = []
    if seen["verify"] != {"message": "Verified: 121", "x-request-id": "py-tls-1"}:
        problems.append(f"VerifyUser over mutual TLS replied {seen['verify']}")
    if seen["health"] != "SERVING":
        problems.append(f"health replied {seen['health']}")
    if seen["without_certificate"] != "UNAVAILABLE":
        problems.append(f"a client without a certificate got {seen['without_certificate']}, not UNAVAILABLE")
    if problems:
        print("; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
