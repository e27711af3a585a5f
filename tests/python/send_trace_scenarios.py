#!/usr/bin/env python3
"""Send a fixed set of traces for the trace query API tests with the OpenTelemetry Python
SDK's OTLP/HTTP exporter (a client we did not write), as one tenant (X-Scope-OrgID), then
print one JSON line per span describing exactly what was sent.

Tenant "acme" (--scenario acme), times relative to --base-ns:
  checkout (t=0):      frontend  SERVER   "GET /checkout"   50 ms  http.route=/checkout
                       frontend  CLIENT   "POST /pay"       40 ms  (child of the root)
                       payments  SERVER   "charge"          30 ms  payment.method=card, Error
                                                                   "card declined", event "retry"
                       payments  INTERNAL "db.query"         5 ms  db.system=postgresql
  home (t=10 s):       frontend  SERVER   "GET /home"        5 ms  http.route=/home
  slow (t=20 s):       frontend  SERVER   "GET /checkout"  200 ms  customer.tier=gold
Tenant "umbrella" (--scenario umbrella):
  secret (t=5 s):      ledger    SERVER   "GET /secret"     10 ms  http.route=/checkout

Usage: send_trace_scenarios.py --endpoint URL --scenario acme|umbrella --base-ns N
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

MS = 1_000_000
S = 1_000_000_000
FAILED = []
OUT = []


class Service:
    """One service: its own tracer provider (resource) exporting as the tenant."""

    def __init__(self, name, endpoint, tenant):
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10, headers={"X-Scope-OrgID": tenant})
        original = exporter.export

        def export(spans):
            result = original(spans)
            if result != SpanExportResult.SUCCESS:
                FAILED.append(result)
            return result

        exporter.export = export
        self.resource = Resource.create({"service.name": name, "deployment.environment": "e2e"})
        self.provider = TracerProvider(resource=self.resource)
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("obs.e2e.scenarios", "1.2")
        self.name = name
        self.tenant = tenant

    def span(self, name, kind, start, duration, parent=None, attributes=None, error=None, event=None):
        ctx = set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, kind=kind, start_time=start, context=ctx, attributes=attributes or {})
        if event:
            s.add_event(event[0], attributes=event[1], timestamp=event[2])
        if error:
            s.set_status(Status(StatusCode.ERROR, error))
        return s, start + duration

    def describe(self, s, end):
        s.end(end_time=end)
        ctx = s.get_span_context()
        OUT.append({
            "tenant": self.tenant,
            "service": self.name,
            "resource": {k: str(v) for k, v in self.resource.attributes.items()},
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
            "name": s.name,
            "kind": s.kind.name.lower(),
            "start_ns": s.start_time,
            "end_ns": s.end_time,
            "attributes": {k: str(v) for k, v in (s.attributes or {}).items()},
            "status_code": s.status.status_code.name,
            "status_message": s.status.description or "",
            "events": [{"name": e.name, "timestamp_ns": e.timestamp,
                        "attributes": {k: str(v) for k, v in e.attributes.items()}} for e in s.events],
        })


def acme(endpoint, base):
    frontend = Service("frontend", endpoint, "acme")
    payments = Service("payments", endpoint, "acme")
    # checkout: a trace over two services
    root, root_end = frontend.span("GET /checkout", SpanKind.SERVER, base, 50 * MS,
                                   attributes={"http.route": "/checkout"})
    pay, pay_end = frontend.span("POST /pay", SpanKind.CLIENT, base + 2 * MS, 40 * MS, parent=root)
    charge, charge_end = payments.span("charge", SpanKind.SERVER, base + 5 * MS, 30 * MS, parent=pay,
                                       attributes={"payment.method": "card"}, error="card declined",
                                       event=("retry", {"attempt": 1}, base + 6 * MS))
    db, db_end = payments.span("db.query", SpanKind.INTERNAL, base + 10 * MS, 5 * MS, parent=charge,
                               attributes={"db.system": "postgresql"})
    payments.describe(db, db_end)
    payments.describe(charge, charge_end)
    frontend.describe(pay, pay_end)
    frontend.describe(root, root_end)
    # home: one fast span
    home, home_end = frontend.span("GET /home", SpanKind.SERVER, base + 10 * S, 5 * MS,
                                   attributes={"http.route": "/home"})
    frontend.describe(home, home_end)
    # slow: the same operation as checkout, four times longer than the whole checkout trace
    slow, slow_end = frontend.span("GET /checkout", SpanKind.SERVER, base + 20 * S, 200 * MS,
                                   attributes={"http.route": "/checkout", "customer.tier": "gold"})
    frontend.describe(slow, slow_end)
    frontend.provider.shutdown()
    payments.provider.shutdown()


def umbrella(endpoint, base):
    ledger = Service("ledger", endpoint, "umbrella")
    s, end = ledger.span("GET /secret", SpanKind.SERVER, base + 5 * S, 10 * MS,
                         attributes={"http.route": "/checkout"})
    ledger.describe(s, end)
    ledger.provider.shutdown()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--scenario", required=True, choices=["acme", "umbrella"])
    p.add_argument("--base-ns", type=int, required=True)
    args = p.parse_args()
    {"acme": acme, "umbrella": umbrella}[args.scenario](args.endpoint, args.base_ns)
    for line in OUT:
        print(json.dumps(line))
    if FAILED:
        print("export failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
