#!/usr/bin/env python3
"""Send traces with one of the OpenTelemetry Python SDK's span exporters (clients we did not
write): OTLP/HTTP, OTLP/gRPC or Zipkin v2 JSON; then print one JSON line per span describing
exactly what was sent.

Each trace: a SERVER root span and a CLIENT child with an event; every third child fails.
Usage: send_otlp_traces.py --endpoint URL --run-id ID --traces N [--protocol P]
"""

import argparse
import json
import sys
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context


FAILED = []


def checked(exporter):
    """Wraps an exporter's export() to remember failures."""
    original = exporter.export

    def export(spans):
        result = original(spans)
        if result != SpanExportResult.SUCCESS:
            FAILED.append(result)
        return result

    exporter.export = export
    return exporter


def make_exporter(protocol, endpoint):
    if protocol == "otlp-http":
        return OTLPSpanExporter(endpoint=endpoint, timeout=10)
    if protocol == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        return Grpc(endpoint=endpoint, insecure=True, timeout=10)
    if protocol == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint, timeout=10)
    raise SystemExit(f"unknown protocol {protocol}")


def describe(span, kind, status, message):
    ctx = span.get_span_context()
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "kind": kind,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status_code": status,
        "status_message": message,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--traces", type=int, default=10)
    p.add_argument("--protocol", default="otlp-http", choices=["otlp-http", "otlp-grpc", "zipkin"])
    args = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-trace-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(checked(make_exporter(args.protocol, args.endpoint))))
    tracer = provider.get_tracer("obs.e2e.traces", "0.9")
    base = time.time_ns() - 60_000_000_000
    out = []
    for i in range(args.traces):
        t0 = base + i * 1_000_000_000
        root = tracer.start_span(f"GET /orders/{i}", kind=SpanKind.SERVER, start_time=t0,
                                 attributes={"test.run_id": args.run_id, "http.status_code": 200})
        child = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, start_time=t0 + 1_000,
                                  context=set_span_in_context(root),
                                  attributes={"test.run_id": args.run_id, "db.rows": i})
        child.add_event("retry", attributes={"attempt": 2}, timestamp=t0 + 2_000)
        failed = i % 3 == 0
        if failed:
            child.set_status(Status(StatusCode.ERROR, "deadlock"))
        child.end(end_time=t0 + 5_000 + i)
        root.end(end_time=t0 + 10_000 + i)
        out.append(describe(child, "Client", "Error" if failed else "Unset", "deadlock" if failed else ""))
        out.append(describe(root, "Server", "Unset", ""))
    provider.shutdown()
    for line in out:
        print(json.dumps(line))
    if FAILED:
        print("export failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
