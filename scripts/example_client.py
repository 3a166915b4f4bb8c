#!/usr/bin/env python3
"""A real gRPC client for preflight, as a dialer team would write one.

    pip install grpcio grpcio-tools
    python3 scripts/example_client.py [127.0.0.1:50051]

Generates Python stubs from proto/ into a temporary directory, records a consent,
adds a company DNC entry and checks a few contacts.
"""
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = tempfile.mkdtemp(prefix="preflight-py-")
protos = [f"preflight/v1/{n}.proto" for n in ("common", "decision", "consent", "dnc")]
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
if protoc.main(["protoc", f"-I{ROOT}/proto", f"-I{include}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *protos]) != 0:
    sys.exit("stub generation failed")
sys.path.insert(0, OUT)

from preflight.v1 import common_pb2 as common  # noqa: E402
from preflight.v1 import consent_pb2, consent_pb2_grpc  # noqa: E402
from preflight.v1 import decision_pb2, decision_pb2_grpc  # noqa: E402
from preflight.v1 import dnc_pb2, dnc_pb2_grpc  # noqa: E402

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
channel = grpc.insecure_channel(target)
decisions = decision_pb2_grpc.DecisionServiceStub(channel)
consents = consent_pb2_grpc.ConsentServiceStub(channel)
dnc = dnc_pb2_grpc.DncServiceStub(channel)

consents.RecordConsent(consent_pb2.RecordConsentRequest(
    contact="(202) 555-0143", status=common.CONSENT_STATUS_GRANTED,
    channels=[common.CHANNEL_SMS], purposes=[common.PURPOSE_MARKETING],
    source="web-form", proof="https://example.com/signup/123", idempotency_key="signup-123"))
dnc.AddEntries(dnc_pb2.AddEntriesRequest(
    entries=[dnc_pb2.DncEntryInput(contact="202-555-0144", type=common.DNC_TYPE_CORPORATE)],
    actor="example", idempotency_key="example-dnc-1"))

batch = decisions.CheckBatch(decision_pb2.CheckBatchRequest(checks=[
    decision_pb2.CheckRequest(contact=c, channel=common.CHANNEL_SMS, purpose=common.PURPOSE_MARKETING, correlation_id=c)
    for c in ("(202) 555-0143", "202-555-0144", "not-a-number")
]))
for r in batch.results:
    reasons = [common.Reason.Name(x) for x in r.reasons]
    print(f"{r.correlation_id:>16} -> {common.Verdict.Name(r.verdict)} {r.normalized_contact} {reasons} {list(r.matched_ids)} seq={r.index_seq}")
