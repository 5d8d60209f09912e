#!/usr/bin/env python3
"""Scores one payment and reads the decision back, from Python, with a client generated
from proto/ by grpcio-tools.

Usage: python3 examples/python_client.py [ADDR] [--key KEY]

ADDR defaults to 127.0.0.1:50051. Once the server has keys, pass a gateway key with --key
(or set FENGKONG_KEY); it is sent as `authorization: Bearer KEY`."""
import argparse
import os
import sys
import tempfile
import time

from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description="Score one payment on a fengkong server.")
parser.add_argument("addr", nargs="?", default="127.0.0.1:50051", help="server host:port")
parser.add_argument("--key", default=os.environ.get("FENGKONG_KEY"),
                    help="gateway key (default: $FENGKONG_KEY); needed once the server has keys")
args = parser.parse_args()

OUT = tempfile.mkdtemp(prefix="fengkong-py-")
if protoc.main(["protoc", f"-I{ROOT}/proto", f"--python_out={OUT}", f"--grpc_python_out={OUT}",
                f"{ROOT}/proto/fengkong/v1/fengkong.proto"]) != 0:
    sys.exit("code generation failed")
sys.path.insert(0, OUT)

import grpc  # noqa: E402
from fengkong.v1 import fengkong_pb2 as pb, fengkong_pb2_grpc as rpc  # noqa: E402

metadata = [("authorization", f"Bearer {args.key}")] if args.key else []
stub = rpc.RiskEngineStub(grpc.insecure_channel(args.addr))


def main():
    payment_id = f"py-{int(time.time() * 1000)}"
    resp = stub.Score(pb.ScoreRequest(
        payment_id=payment_id,
        event_time_ms=int(time.time() * 1000),
        channel=pb.ALIPAY,
        scene=pb.MERCHANT_STATIC_CODE,
        payer=pb.Payer(account_id="alice", real_name_verified=True),
        payee=pb.Payee(account_id="noodle-shop-42", kind=pb.MERCHANT, merchant_category="5812"),
        amount_fen=3_800,
        funding=pb.BALANCE,
        device_id="iphone-7f3a",
        ip="203.0.113.9",
    ), timeout=5, metadata=metadata)
    print("score:", pb.Action.Name(resp.action), resp.risk_score, resp.decision_id)
    for r in resp.reasons:
        print("  reason:", r.code, "-", r.message)

    decision = stub.GetDecision(pb.GetDecisionRequest(payment_id=payment_id), timeout=5,
                                metadata=metadata)
    assert decision.response == resp, "GetDecision must return what Score answered"
    print("stored decision", decision.response.decision_id, "for", decision.request.payment_id)

    try:
        stub.Score(pb.ScoreRequest(payment_id=payment_id + "-bad", amount_fen=-1), timeout=5,
                   metadata=metadata)
        sys.exit("a bad request was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        print("bad input:", e.code().name, "-", e.details())


try:
    main()
except grpc.RpcError as e:
    hint = ""
    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
        hint = " (pass a gateway key: --key KEY, from `fengkong keys add --role gateway`)"
    elif e.code() == grpc.StatusCode.UNAVAILABLE:
        hint = f" (is `fengkong serve` running on {args.addr}?)"
    sys.exit(f"fengkong: {e.code().name}: {e.details()}{hint}")
