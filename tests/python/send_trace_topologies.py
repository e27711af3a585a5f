#!/usr/bin/env python3
"""Send designed traces for the trace processor's tests with the OpenTelemetry Python SDK's
OTLP/HTTP exporter (a client we did not write), as tenant "acme", then print one JSON line
per span saying exactly what was sent (ids, service, name, kind, status, times, attributes,
and the byte size of the span's own OTLP protobuf encoding with its flags cleared: what
Tempo's traces_spanmetrics_size_total counts for a span with string attributes).

--scenario topology (times before --base-ns, one trace per 200 ms):
  checkout x3:  frontend SERVER "GET /checkout" (root)                 120 ms
                frontend CLIENT "POST /cart"   -> cart SERVER "add"      50 / 40 ms
                cart     CLIENT "GET rates"    peer.service=fx-api      20 ms (no server)
                frontend CLIENT "POST /pay"    -> payments SERVER "charge" 60 / 45 ms,
                                                  Error in the second checkout
                payments CLIENT "SELECT"       db.system=postgresql db.name=ledger 10 ms
                frontend CLIENT "GET /ads"     (no server, no peer)      5 ms
  orders x2:    orders PRODUCER "publish order" (root) -> mailer CONSUMER "process order"
                5 / 30 ms
  stock x2:     inventory SERVER "GET /stock" whose parent is a remote span never sent
                (an uninstrumented client)                                 8 ms
  status x1:    frontend SERVER "GET /status" (root) peer.service=healthchecker 3 ms
--scenario sampling: the traces of tests/traces/sampling.yml's cases, one per 200 ms, each
  root span named after its case.
--scenario late --trace-ids A,B: one more "late" span (1 ms, status Error) in each trace,
  shop SERVER in the first (a server side the service graph can no longer pair), shop
  INTERNAL in the others.

Usage: send_trace_topologies.py --endpoint URL --scenario S --base-ns N [--trace-ids A,B]
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

MS = 1_000_000
FAILED = []
OUT = []
KINDS = {
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
    SpanKind.INTERNAL: "Internal",
}


def text(v):
    """An attribute value as the pipeline keeps it (OTLP bools and numbers as text)."""
    kind = v.WhichOneof("value")
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(v, kind))
    return v.string_value


def size_of(span):
    """Bytes of the span's own OTLP encoding as the pipeline keeps the span: flags cleared,
    attribute values as text (what traces_spanmetrics_size_total counts)."""
    pb = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0]
    pb.flags = 0
    for kv in pb.attributes:
        kv.value.string_value = text(kv.value)
    for link in pb.links:
        link.flags = 0
    return pb.ByteSize()


def describe(span):
    ctx = span.get_span_context()
    parent = span.parent.span_id if span.parent is not None else None
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent, "016x") if parent else "",
        "service": span.resource.attributes["service.name"],
        "name": span.name,
        "kind": KINDS[span.kind],
        "status": {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}[span.status.status_code],
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attrs": {k: str(v) for k, v in (span.attributes or {}).items()},
        "size": size_of(span),
    }


class Service:
    """One service: its own tracer provider (resource) exporting as the tenant."""

    def __init__(self, name, endpoint):
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10, headers={"X-Scope-OrgID": "acme"})
        original = exporter.export

        def export(spans):
            result = original(spans)
            if result != SpanExportResult.SUCCESS:
                FAILED.append(result)
            else:
                OUT.extend(describe(s) for s in spans)
            return result

        exporter.export = export
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("obs.e2e.topologies", "1.0")

    def span(self, name, kind, start, ms, parent=None, attributes=None, error=False):
        ctx = set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, kind=kind, start_time=start, context=ctx, attributes=attributes or {})
        if error:
            s.set_status(Status(StatusCode.ERROR, "failed"))
        return s, start + ms * MS

    def shutdown(self):
        self.provider.shutdown()


def end(pair):
    span, at = pair
    span.end(end_time=at)
    return span


def remote_parent(trace_id, span_id):
    return NonRecordingSpan(SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(1)))


def topology(svc, base):
    t = base
    for i in range(3):
        root = svc["frontend"].span("GET /checkout", SpanKind.SERVER, t, 120)
        cart_call = svc["frontend"].span("POST /cart", SpanKind.CLIENT, t + 1 * MS, 50, parent=root[0])
        cart = svc["cart"].span("add", SpanKind.SERVER, t + 2 * MS, 40, parent=cart_call[0])
        rates = svc["cart"].span("GET rates", SpanKind.CLIENT, t + 3 * MS, 20, parent=cart[0], attributes={"peer.service": "fx-api"})
        end(rates)
        end(cart)
        end(cart_call)
        pay_call = svc["frontend"].span("POST /pay", SpanKind.CLIENT, t + 55 * MS, 60, parent=root[0])
        pay = svc["payments"].span("charge", SpanKind.SERVER, t + 56 * MS, 45, parent=pay_call[0], error=(i == 1))
        db = svc["payments"].span("SELECT", SpanKind.CLIENT, t + 57 * MS, 10, parent=pay[0], attributes={"db.system": "postgresql", "db.name": "ledger"})
        end(db)
        end(pay)
        end(pay_call)
        ads = svc["frontend"].span("GET /ads", SpanKind.CLIENT, t + 116 * MS, 5, parent=root[0])
        end(ads)
        end(root)
        t += 200 * MS
    for _ in range(2):
        prod = svc["orders"].span("publish order", SpanKind.PRODUCER, t, 5)
        cons = svc["mailer"].span("process order", SpanKind.CONSUMER, t + 6 * MS, 30, parent=prod[0])
        end(prod)
        end(cons)
        t += 200 * MS
    for i in range(2):
        parent = remote_parent(0x5E5E5E5E00000000000000000000000 + i, 0xABCDEF0000000000 + i)
        end(svc["inventory"].span("GET /stock", SpanKind.SERVER, t, 8, parent=parent))
        t += 200 * MS
    end(svc["frontend"].span("GET /status", SpanKind.SERVER, t, 3, attributes={"peer.service": "healthchecker"}))


SAMPLING_CASES = [
    # (case, spans, ms, attributes, error)
    ("fast-ok", 1, 10, {}, False),
    ("error", 1, 10, {}, True),
    ("slow", 1, 600, {}, False),
    ("at-threshold", 1, 500, {}, False),
    ("gold", 1, 10, {"customer.tier": "gold"}, False),
    ("platinum", 1, 10, {"customer.tier": "platinum"}, False),
    ("silver", 1, 10, {"customer.tier": "silver"}, False),
    ("big", 5, 10, {}, False),
    ("health-error", 1, 10, {"http.route": "/healthz"}, True),
    ("debug-beta", 1, 10, {"debug": True, "build": 150}, False),
    ("debug-old", 1, 10, {"debug": True, "build": 250}, False),
]


def sampling(svc, base):
    t = base
    shop = svc["shop"]
    for case, n, ms, attrs, error in SAMPLING_CASES:
        root = shop.span(case, SpanKind.SERVER, t, ms, attributes=attrs, error=error)
        for k in range(n - 1):
            end(shop.span(f"{case}-child-{k}", SpanKind.INTERNAL, t + (k + 1) * MS, 1, parent=root[0]))
        end(root)
        t += 200 * MS


def late(svc, base, trace_ids):
    for i, tid in enumerate(trace_ids):
        parent = remote_parent(int(tid, 16), 0x1A7E000000000000 + i + 1)
        kind = SpanKind.SERVER if i == 0 else SpanKind.INTERNAL
        end(svc["shop"].span("late", kind, base + i * MS, 1, parent=parent, error=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--scenario", required=True, choices=["topology", "sampling", "late"])
    ap.add_argument("--base-ns", type=int, required=True)
    ap.add_argument("--trace-ids", default="")
    a = ap.parse_args()
    names = ["frontend", "cart", "payments", "orders", "mailer", "inventory", "shop"]
    svc = {n: Service(n, a.endpoint) for n in names}
    if a.scenario == "topology":
        topology(svc, a.base_ns)
    elif a.scenario == "sampling":
        sampling(svc, a.base_ns)
    else:
        late(svc, a.base_ns, [t for t in a.trace_ids.split(",") if t])
    for s in svc.values():
        s.shutdown()
    if FAILED:
        print(f"{len(FAILED)} exports failed: {FAILED}", file=sys.stderr)
        sys.exit(1)
    for line in OUT:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
