#!/usr/bin/env python3
"""Exceptions for the error-group tests, raised for real in this file's functions, recorded
on spans with the OpenTelemetry SDK's record_exception and logged with logging.exception
through the SDK's LoggingHandler (both over OTLP/HTTP as tenant "acme"); then one JSON line
per occurrence as the exporters sent it: designed group, source, timestamp (ns), service,
release, trace id, exception type.

Designed groups:
  quantity: ValueError("invalid quantity N for item M") from parse_quantity via place_order
            and fail_quantity: 3 spans of checkout 1.4.2 (N, M vary), 1 span of checkout
            1.4.3, 2 error logs of checkout 1.4.3
  price:    ValueError with the same message shape from parse_price (another place): 1 span
  sku:      KeyError('sku-123'), KeyError('sku-987') from lookup_sku: 2 spans of inventory 2.0

Usage: send_errors.py --traces URL --logs URL
"""

import argparse
import json
import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

HEADERS = {"X-Scope-OrgID": "acme"}
FAILED = []
OUT = []
CURRENT = {"group": None}


def parse_quantity(q, item):
    raise ValueError(f"invalid quantity {q} for item {item}")


def parse_price(q, item):
    raise ValueError(f"invalid quantity {q} for item {item}")


def lookup_sku(sku):
    return {}[sku]


def place_order(q, item):
    parse_quantity(q, item)


def place_price(q, item):
    parse_price(q, item)


def fail_quantity(q, item, record):
    try:
        place_order(q, item)
    except ValueError as e:
        record(e)


def fail_price(q, item, record):
    try:
        place_price(q, item)
    except ValueError as e:
        record(e)


def fail_sku(sku, record):
    try:
        lookup_sku(sku)
    except KeyError as e:
        record(e)


class Service:
    """A service release: tracer and logger providers with its resource."""

    def __init__(self, name, version, traces, logs):
        resource = Resource.create({"service.name": name, "service.version": version})
        self.name, self.version = name, version
        span_exporter = OTLPSpanExporter(endpoint=traces, timeout=10, headers=HEADERS)
        original_spans = span_exporter.export

        def export_spans(spans):
            result = original_spans(spans)
            if result != SpanExportResult.SUCCESS:
                FAILED.append(result)
                return result
            for s in spans:
                for e in s.events:
                    if e.name == "exception":
                        OUT.append({
                            "group": CURRENT["group"], "source": "span", "timestamp_ns": e.timestamp,
                            "service": name, "release": version,
                            "trace_id": format(s.get_span_context().trace_id, "032x"),
                            "type": e.attributes["exception.type"],
                        })
            return result

        span_exporter.export = export_spans
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        self.tracer = self.tracer_provider.get_tracer("obs.e2e.errors")

        log_exporter = OTLPLogExporter(endpoint=logs, timeout=10, headers=HEADERS)
        original_logs = log_exporter.export

        def export_logs(batch):
            result = original_logs(batch)
            if result != LogRecordExportResult.SUCCESS:
                FAILED.append(result)
                return result
            for d in batch:
                r = d.log_record
                OUT.append({
                    "group": CURRENT["group"], "source": "log", "timestamp_ns": r.timestamp,
                    "service": name, "release": version, "trace_id": "",
                    "type": r.attributes["exception.type"],
                })
            return result

        log_exporter.export = export_logs
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        self.log = logging.getLogger(f"{name}-{version}")
        self.log.propagate = False
        self.log.addHandler(LoggingHandler(level=logging.ERROR, logger_provider=self.logger_provider))

    def on_span(self, group, fail, *args):
        CURRENT["group"] = group
        with self.tracer.start_as_current_span("handle", record_exception=False) as span:
            fail(*args, span.record_exception)

    def in_log(self, group, fail, *args):
        CURRENT["group"] = group
        fail(*args, lambda e: self.log.exception("order failed"))

    def shutdown(self):
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", required=True)
    ap.add_argument("--logs", required=True)
    a = ap.parse_args()
    v142 = Service("checkout", "1.4.2", a.traces, a.logs)
    v143 = Service("checkout", "1.4.3", a.traces, a.logs)
    inventory = Service("inventory", "2.0", a.traces, a.logs)
    for q, item in [(3, 42), (0, 7), (8, 1001)]:
        v142.on_span("quantity", fail_quantity, q, item)
    v143.on_span("quantity", fail_quantity, 12, 5)
    for q, item in [(99, 3), (5, 77)]:
        v143.in_log("quantity", fail_quantity, q, item)
    v142.on_span("price", fail_price, 7, 9)
    for sku in ["sku-123", "sku-987"]:
        inventory.on_span("sku", fail_sku, sku)
    for s in (v142, v143, inventory):
        s.shutdown()
    if FAILED:
        print(f"{len(FAILED)} exports failed: {FAILED}", file=sys.stderr)
        sys.exit(1)
    for line in OUT:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
