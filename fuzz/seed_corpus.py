#!/usr/bin/env python3
"""Seeds the fuzz corpus (fuzz/corpus/<target>/) with real payloads from the clients the
tests use: bodies the OpenTelemetry Python SDK exporters send (OTLP/HTTP logs, traces,
metrics, gzip, Zipkin JSON), remote-write requests of a real Prometheus 2.42, the exposition
pages of Prometheus and node_exporter (text and OpenMetrics), the shared PromQL conformance
queries, the LogQL test queries and Loki push bodies computed from the shared LogQL corpus,
and the SQL, event and JSON-line shapes of the tests. Avro seeds come from
`cargo test --test fuzz_corpus -- --ignored write_avro_seeds`.

usage: seed_corpus.py  (run with the stack's venv python from the repo root; takes ~30 s)
"""

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SHARED = os.path.join(ROOT, "..", "shared")
BODIES = []  # (path, content-encoding, body)


def save(target, data):
    """Writes one seed, named by its content (so reruns add nothing twice)."""
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


class Capture(http.server.BaseHTTPRequestHandler):
    """Keeps every POST body and answers as the receiving protocol expects."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        BODIES.append((self.path, self.headers.get("Content-Encoding", ""), body))
        code = 204 if self.path.endswith("/write") else 202 if "spans" in self.path else 200
        self.send_response(code)
        if code == 200:
            self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wait_answering(url):
    for _ in range(100):
        try:
            return get(url)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} does not answer")


def main():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    py = os.path.join(ROOT, "tests", "python")

    # The OpenTelemetry SDK's exporters.
    run(f"{py}/send_otlp_logs.py", "--endpoint", f"{base}/v1/logs", "--run-id", "seed", "--count", "4")
    run(f"{py}/send_otlp_logs.py", "--endpoint", f"{base}/v1/logs", "--run-id", "seed", "--count", "2",
        "--compression", "gzip")
    run(f"{py}/send_otlp_traces.py", "--endpoint", f"{base}/v1/traces", "--run-id", "seed", "--traces", "3")
    run(f"{py}/send_otlp_traces.py", "--endpoint", f"{base}/api/v2/spans", "--run-id", "seed",
        "--traces", "2", "--protocol", "zipkin")
    run(f"{py}/send_otlp_metrics.py", "--endpoint", f"{base}/v1/metrics", "--run-id", "seed")
    run(f"{py}/send_otlp_metrics.py", "--endpoint", f"{base}/v1/metrics", "--run-id", "seed",
        "--temporality", "delta")

    # Prometheus 2.42: its remote write and its own exposition page; node_exporter's page.
    with tempfile.TemporaryDirectory() as tmp:
        prom_port, node_port = free_port(), free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{prom_port}', '127.0.0.1:{node_port}']
remote_write:
  - url: {base}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
    metadata_config:
      send_interval: 1s
""")
        node = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_answering(f"http://127.0.0.1:{prom_port}/-/ready")
            wait_answering(f"http://127.0.0.1:{node_port}/metrics")
            deadline = time.time() + 30
            while time.time() < deadline and sum(p.endswith("/write") for p, _, _ in BODIES) < 4:
                time.sleep(0.5)
            for url in [f"http://127.0.0.1:{prom_port}/metrics", f"http://127.0.0.1:{node_port}/metrics"]:
                save("exposition", get(url))
                save("exposition", get(url, "application/openmetrics-text;version=1.0.0"))
        finally:
            prom.terminate()
            node.terminate()
            prom.wait()
            node.wait()

    targets = {"/v1/logs": "otlp_logs", "/v1/traces": "otlp_traces", "/v1/metrics": "otlp_metrics",
               "/api/v2/spans": "zipkin", "/api/v1/write": "remote_write"}
    kept = {}
    for path, encoding, body in BODIES:
        target = "gzip_body" if encoding == "gzip" else targets[path]
        if kept.get(target, 0) < 6:
            save(target, body)
            kept[target] = kept.get(target, 0) + 1
    assert kept.get("remote_write", 0) >= 2, f"Prometheus sent {kept.get('remote_write', 0)} remote writes"

    # Queries: the shared PromQL conformance file; the LogQL test's queries and Loki push
    # bodies from the shared LogQL corpus.
    with open(os.path.join(SHARED, "promql", "queries.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                save("promql", line.strip())
    with tempfile.TemporaryDirectory() as tmp:
        end = int(time.time()) - 30
        start = end - 1200  # the span the LogQL test uses
        corpus = os.path.join(tmp, "corpus.jsonl")
        with open(corpus, "w") as f:
            subprocess.run([sys.executable, os.path.join(SHARED, "logql", "gen_corpus.py"), "--start",
                            str(start), "--end", str(end), "--format", "jsonl"], check=True, stdout=f)
        cases = json.loads(subprocess.run([sys.executable, f"{py}/logql_expected.py", "--corpus", corpus,
                                           "--start", str(start), "--end", str(end)],
                                          check=True, capture_output=True).stdout)
        for q in sorted({c["params"]["query"] for c in cases if "query" in c["params"]}):
            save("logql", q)
        push = subprocess.run([sys.executable, os.path.join(SHARED, "logql", "gen_corpus.py"), "--start",
                               str(start), "--end", str(start + 2), "--format", "loki"],
                              check=True, capture_output=True).stdout.decode()
        for body in push.splitlines()[:4]:
            save("loki", body)

    # The shapes of the SQL, event and JSON-line tests.
    for sql in ["SELECT ServiceName, count() FROM otel_logs GROUP BY ServiceName",
                "SELECT * FROM otel_traces WHERE TraceId IN (SELECT TraceId FROM otel_traces_trace_id_ts) LIMIT 5",
                "WITH t AS (SELECT Body FROM otel_logs) SELECT count() FROM t UNION ALL SELECT 1",
                "SELECT * FROM merge('obs', 'otel_.*')", "SELECT number FROM numbers(10) FORMAT JSON"]:
        save("sql_guard", sql)
    save("events", json.dumps([{"type": "deploy", "source": "ci", "title": "v1.2.3", "severity": "info",
                                "attributes": {"service": "api"}, "timestamp": "2026-01-01T00:00:00Z"}]))
    save("events", json.dumps({"kind": "Event", "apiVersion": "v1", "reason": "BackOff", "type": "Warning",
                               "message": "Back-off restarting failed container",
                               "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop"},
                               "lastTimestamp": "2026-01-01T00:00:00Z"}))
    save("json_lines", "\n".join(json.dumps(x) for x in [
        {"timestamp": 1_700_000_000.25, "message": "GET / 200", "host": "web-1", "service": "web"},
        {"date": 1_700_000_000, "log": "fluent bit line", "level": "warn", "tenant": "acme"},
        {"time": "2026-01-01T00:00:00Z", "msg": "plain", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}]))
    print(f"seeded {CORPUS}: " + ", ".join(f"{t} {len(os.listdir(os.path.join(CORPUS, t)))}"
                                           for t in sorted(os.listdir(CORPUS))))


if __name__ == "__main__":
    main()
