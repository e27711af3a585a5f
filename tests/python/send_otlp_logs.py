#!/usr/bin/env python3
"""Send log records with the OpenTelemetry Python SDK's OTLP/HTTP exporter (a client we did
not write), then print one JSON line per record describing exactly what was sent.

Usage: send_otlp_logs.py --endpoint URL --run-id ID --count N [--compression gzip|none]
       [--protocol otlp-http|otlp-grpc] [--header name=value ...] [--ca CA.pem]
With --ca the exporter speaks TLS (an https:// endpoint; gRPC with channel credentials)
and trusts only that CA.
Exits non-zero if the exporter reports a failure.
"""

import argparse
import json
import os
import sys
import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import TraceFlags

SEVERITIES = [
    ("DEBUG", SeverityNumber.DEBUG),
    ("INFO", SeverityNumber.INFO),
    ("WARN", SeverityNumber.WARN),
    ("ERROR", SeverityNumber.ERROR),
]


FAILED = []


def make_exporter(protocol, endpoint, compression, headers, ca):
    """The SDK's OTLP/HTTP or OTLP/gRPC log exporter sending `headers` (gRPC: metadata),
    over TLS trusting `ca` when given, remembering failed exports."""
    if protocol == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc
        import grpc
        c = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        tls = {}
        if ca:
            with open(ca, "rb") as f:
                tls = {"insecure": False, "credentials": grpc.ssl_channel_credentials(root_certificates=f.read())}
        else:
            tls = {"insecure": True}
        exporter = Grpc(endpoint=endpoint, compression=c, timeout=10,
                        headers=headers or None, **tls)
    else:
        if ca:
            # requests lets these environment variables override a session's own CA file
            # (psf/requests#3829): the exporter's certificate_file must be the one used.
            for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
                os.environ.pop(name, None)
        c = Compression.Gzip if compression == "gzip" else Compression.NoCompression
        exporter = OTLPLogExporter(endpoint=endpoint, compression=c, timeout=10,
                                   headers=headers or None, certificate_file=ca or None)
    original = exporter.export

    def export(batch):
        result = original(batch)
        if result != LogRecordExportResult.SUCCESS:
            FAILED.append(result)
        return result

    exporter.export = export
    return exporter


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--compression", default="none", choices=["none", "gzip"])
    p.add_argument("--protocol", default="otlp-http", choices=["otlp-http", "otlp-grpc"])
    p.add_argument("--header", action="append", default=[], help="name=value, sent with every export")
    p.add_argument("--ca", default="", help="PEM CA to trust: speak TLS")
    args = p.parse_args()

    headers = dict(h.split("=", 1) for h in args.header)
    exporter = make_exporter(args.protocol, args.endpoint, args.compression, headers, args.ca)
    provider = LoggerProvider(resource=Resource.create({"service.name": "sdk-test-svc", "deployment.environment": "e2e"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("obs.e2e", "1.2.3")

    base = time.time_ns()
    for seq in range(args.count):
        text, number = SEVERITIES[seq % len(SEVERITIES)]
        ts = base - (args.count - seq) * 1_000_000
        trace_id = (0x0AF7651916CD43DD8448EB211C80319C + seq) & ((1 << 128) - 1)
        span_id = 0xB7AD6B7169203331 + seq
        record = LogRecord(
            timestamp=ts,
            observed_timestamp=ts + 500,
            trace_id=trace_id,
            span_id=span_id,
            trace_flags=TraceFlags(1),
            severity_text=text,
            severity_number=number,
            body=f"order {seq} processed",
            attributes={
                "test.run_id": args.run_id,
                "test.seq": seq,
                "ratio": 0.25,
                "ok": True,
                "tags": ["a", "b"],
                "user": f"u{seq}",
            },
        )
        logger.emit(record)
        print(json.dumps({
            "seq": seq,
            "timestamp_ns": ts,
            "observed_timestamp_ns": ts + 500,
            "trace_id": f"{trace_id:032x}",
            "span_id": f"{span_id:016x}",
            "severity_text": text,
            "severity_number": int(number.value),
            "body": f"order {seq} processed",
        }))
    provider.shutdown()
    if FAILED:
        print("export failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
