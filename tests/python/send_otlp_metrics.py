#!/usr/bin/env python3
"""Send metrics with the OpenTelemetry Python SDK's OTLP metric exporter (HTTP or gRPC; a
client we did not write), in three exports, then print one JSON line per exported data point
describing exactly what was sent.

Usage: send_otlp_metrics.py --endpoint URL --run-id ID [--protocol otlp-http|otlp-grpc]
                            [--temporality cumulative|delta]
"""

import argparse
import json
import sys

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricExportResult,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource

EXPORTED = []
FAILED = []


def make_exporter(protocol, endpoint, temporality):
    prefs = None
    if temporality == "delta":
        prefs = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA,
                 UpDownCounter: AggregationTemporality.CUMULATIVE,
                 ObservableGauge: AggregationTemporality.CUMULATIVE}
    if protocol == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(endpoint=endpoint, timeout=10, preferred_temporality=prefs)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=10, preferred_temporality=prefs)


def record(metrics_data):
    for rm in metrics_data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d = m.data
                kind = type(d).__name__
                for p in d.data_points:
                    line = {"name": m.name, "kind": kind, "attributes": dict(p.attributes),
                            "time_unix_nano": p.time_unix_nano}
                    if isinstance(d, (Sum,)):
                        line["monotonic"] = d.is_monotonic
                        line["delta"] = d.aggregation_temporality == AggregationTemporality.DELTA
                    if isinstance(d, (Sum, Gauge)):
                        line["value"] = p.value
                    else:
                        line["delta"] = d.aggregation_temporality == AggregationTemporality.DELTA
                        line.update(count=p.count, sum=p.sum, bucket_counts=list(p.bucket_counts),
                                    explicit_bounds=list(p.explicit_bounds))
                    EXPORTED.append(line)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--protocol", default="otlp-http", choices=["otlp-http", "otlp-grpc"])
    p.add_argument("--temporality", default="cumulative", choices=["cumulative", "delta"])
    args = p.parse_args()

    exporter = make_exporter(args.protocol, args.endpoint, args.temporality)
    original = exporter.export

    def export(metrics_data, **kwargs):
        result = original(metrics_data, **kwargs)
        if result == MetricExportResult.SUCCESS:
            record(metrics_data)
        else:
            FAILED.append(result)
        return result

    exporter.export = export
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "sdk-metrics-svc", "service.instance.id": args.run_id,
                                "deployment.environment": "e2e"})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("obs.e2e.metrics", "0.9")
    orders = meter.create_counter("orders", unit="{order}", description="Orders placed.")
    depth = meter.create_up_down_counter("queue.depth", description="Jobs waiting.")
    duration = meter.create_histogram("request.duration", unit="ms", description="Request time.")
    meter.create_observable_gauge("temperature", callbacks=[lambda _: [Observation(21.5, {"room": "lab"})]])

    orders.add(3, {"shop": "a"})
    orders.add(5, {"shop": "b"})
    depth.add(10)
    depth.add(-3)
    for v in (5, 15, 150):
        duration.record(v, {"http.route": "/x"})
    provider.force_flush()
    orders.add(2, {"shop": "a"})
    duration.record(30, {"http.route": "/x"})
    provider.force_flush()
    orders.add(1, {"shop": "b"})
    provider.shutdown()
    for line in EXPORTED:
        print(json.dumps(line))
    if FAILED:
        print(f"export failed: {FAILED}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
