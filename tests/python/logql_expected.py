#!/usr/bin/env python3
"""Expected answers of the LogQL end-to-end test, computed straight from the corpus
(`gen_corpus.py --format jsonl`), independently of the Rust implementation: each case is
a Loki API request and the `data` Loki gives for it, or the HTTP status and a text the
error must contain.

usage: logql_expected.py --corpus FILE.jsonl --start S --end E
  S, E: the corpus range in unix seconds (as given to gen_corpus.py).
Prints one JSON array of cases: {"name", "path", "params", "expect": {...}}.
"""
import argparse
import json
import math
import re

NS = 10**9


def load(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            out.append({"labels": e["labels"], "ts": int(e["ts_ns"]), "line": e["line"]})
    return out


def num(v):
    """A sample value as Loki writes it (shortest round-trip decimal, no exponent)."""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    r = repr(v)
    assert "e" not in r, r
    return r


def key(labels):
    return sorted(labels.items())


# ---- log queries ---------------------------------------------------------------------

def streams(entries, start, end, limit, backward, transform):
    """Loki streams: the first `limit` kept entries in direction order, grouped by labels."""
    picked = sorted((e for e in entries if start <= e["ts"] < end), key=lambda e: e["ts"], reverse=backward)
    groups = {}
    kept = 0
    for e in picked:
        r = transform(e)
        if r is None:
            continue
        labels, line = r
        labels = {k: v for k, v in labels.items() if v != ""}
        groups.setdefault(json.dumps(key(labels)), (labels, []))[1].append([str(e["ts"]), line])
        kept += 1
        if kept == limit:
            break
    return {"resultType": "streams", "result": [{"stream": l, "values": v} for l, v in groups.values()]}


def flatten(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        name = re.sub(r"[^a-zA-Z0-9_]", "_", k)
        name = f"{prefix}_{name}" if prefix else name
        if isinstance(v, dict):
            out.update(flatten(v, name))
        elif isinstance(v, bool):
            out[name] = "true" if v else "false"
        elif isinstance(v, (int, float, str)):
            out[name] = str(v)
    return out


def extracted(stream, fields):
    """Parsed fields join the stream labels; a name the stream already has gets _extracted."""
    out = dict(stream)
    for k, v in fields.items():
        out[k + "_extracted" if k in stream else k] = v
    return out


def json_fields(line):
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return flatten(v) if isinstance(v, dict) else None


LOGFMT = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')


def logfmt_fields_of(line):
    return {m.group(1): (m.group(2) if m.group(2) is not None else m.group(3)) for m in LOGFMT.finditer(line)}


# ---- metric queries ------------------------------------------------------------------

def samples(entries, lo, hi, extract):
    """series key -> (labels, [(ts, value)]) for entries in (lo, hi]."""
    out = {}
    for e in sorted(entries, key=lambda e: e["ts"]):
        if not (lo < e["ts"] <= hi):
            continue
        r = extract(e)
        if r is None:
            continue
        labels, v = r
        labels = {k: x for k, x in labels.items() if x != ""}
        out.setdefault(json.dumps(key(labels)), (labels, []))[1].append((e["ts"], v))
    return out


def mean(xs):
    m = 0.0
    for i, x in enumerate(xs):
        m += (x - m) / (i + 1)
    return m


def quantile(q, xs):
    xs = sorted(xs)
    n = len(xs)
    rank = q * (n - 1)
    lo = max(0.0, math.floor(rank))
    hi = min(n - 1.0, lo + 1)
    w = rank - math.floor(rank)
    return xs[int(lo)] * (1 - w) + xs[int(hi)] * w


RANGE_FNS = {
    "count": lambda w, r: float(len(w)),
    "rate": lambda w, r: len(w) / r,
    "bytes": lambda w, r: float(sum(w)),
    "bytes_rate": lambda w, r: sum(w) / r,
    "sum": lambda w, r: sum(w),
    "avg": lambda w, r: mean(w),
    "min": lambda w, r: min(w),
    "max": lambda w, r: max(w),
}


def in_label_order(series):
    """Series in the order of their label sets (as sorted (name, value) pairs)."""
    return sorted(series.values(), key=lambda lp: key(lp[0]))


def range_vector(series, fn, range_s, t):
    out = []
    for labels, pts in in_label_order(series):
        w = [v for ts, v in pts if t - range_s * NS < ts <= t]
        if w:
            out.append((labels, fn(w, range_s)))
    return out


def group(vec, by=None, without=None):
    groups = {}
    for labels, v in vec:
        if by is not None:
            g = {k: x for k, x in labels.items() if k in by}
        elif without is not None:
            g = {k: x for k, x in labels.items() if k not in without}
        else:
            g = {}
        groups.setdefault(json.dumps(key(g)), (g, [], []))
        groups[json.dumps(key(g))][1].append(v)
        groups[json.dumps(key(g))][2].append((labels, v))
    return [groups[k] for k in sorted(groups)]


def stddev(xs):
    m, m2 = 0.0, 0.0
    for i, x in enumerate(xs):
        delta = x - m
        m += delta / (i + 1)
        m2 += delta * (x - m)
    return math.sqrt(m2 / len(xs))


def agg(op, vec, by=None, without=None):
    fns = {"sum": sum, "avg": mean, "min": min, "max": max, "count": lambda xs: float(len(xs)), "stddev": stddev}
    return [(g, fns[op](vals)) for g, vals, _ in group(vec, by, without)]


def topk(k, vec, largest=True):
    ordered = sorted(vec, key=lambda lv: (-lv[1] if largest else lv[1], key(lv[0])))
    if len(ordered) > k:
        assert ordered[k - 1][1] != ordered[k][1], f"tie at rank {k}: pick another query"
    return ordered[:k]


def matrix(ts, evaluate):
    series = {}
    for t in ts:
        for labels, v in evaluate(t):
            series.setdefault(json.dumps(key(labels)), (labels, []))[1].append([t // NS, num(v)])
    return {"resultType": "matrix", "result": [{"metric": l, "values": v} for l, v in series.values()]}


def vector(t, vec):
    return {"resultType": "vector", "result": [{"metric": l, "value": [t // NS, num(v)]} for l, v in vec]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--end", type=int, required=True)
    a = ap.parse_args()
    entries = load(a.corpus)
    S, E = a.start, a.end
    lstart, lend = S * NS, (E + 1) * NS
    cases = []

    def logs(name, query, limit, backward, transform):
        params = {"query": query, "start": str(lstart), "end": str(lend), "limit": str(limit),
                  "direction": "backward" if backward else "forward"}
        cases.append({"name": name, "path": "/loki/api/v1/query_range", "params": params,
                      "expect": {"data": streams(entries, lstart, lend, limit, backward, transform)}})

    def svc(e, *names):
        return e["labels"]["service"] in names

    logs("logs_backward_limit", '{service="api"}', 25, True,
         lambda e: (e["labels"], e["line"]) if svc(e, "api") else None)
    logs("logs_forward_chained_line_filters", '{service="api", env!="staging"} |= "GET" != "orders/42"', 1000, False,
         lambda e: (e["labels"], e["line"]) if svc(e, "api") and e["labels"]["env"] != "staging"
         and "GET" in e["line"] and "orders/42" not in e["line"] else None)
    logs("logs_regex_matchers_and_filter", r'{service=~"web|db", pod!~"db-.*"} |~ "HTTP/1\\.1\" 5\\d\\d"', 1000, False,
         lambda e: (e["labels"], e["line"]) if svc(e, "web", "db") and not re.fullmatch("db-.*", e["labels"]["pod"])
         and re.search(r'HTTP/1\.1" 5\d\d', e["line"]) else None)
    logs("logs_negative_regex_filter", '{service="db"} !~ "checkpoint|INFO"', 1000, True,
         lambda e: (e["labels"], e["line"]) if svc(e, "db") and not re.search("checkpoint|INFO", e["line"]) else None)
    logs("logs_question_mark_in_filter", '{service="api"} |= "?q=caf"', 7, True,
         lambda e: (e["labels"], e["line"]) if svc(e, "api") and "?q=caf" in e["line"] else None)

    def api_json(e):
        f = json_fields(e["line"])
        return extracted(e["labels"], f)

    def json_filter(e):
        if not svc(e, "api"):
            return None
        lb = api_json(e)
        st, d = float(lb["status"]), float(lb["duration_ms"])
        if (st >= 500 and d > 2500) or (lb["method"] == "DELETE" and st == 404):
            return lb, e["line"]
        return None
    logs("logs_json_and_numeric_label_filters",
         '{service="api"} | json | status >= 500 and duration_ms > 2500 or method="DELETE" and status=404', 1000, False,
         json_filter)

    def string_and_numeric_ops(e):
        if not svc(e, "api"):
            return None
        lb = api_json(e)
        d, st = float(lb["duration_ms"]), float(lb["status"])
        a = re.fullmatch("/api/(orders|search).*", lb["path"]) and lb["method"] != "GET" and d < 300
        b = not re.fullmatch("/api.*", lb["path"]) and d <= 400 and st != 200
        return (lb, e["line"]) if a or b else None
    logs("logs_all_label_filter_operators",
         '{service="api"} | json | path=~"/api/(orders|search).*", method!="GET" duration_ms < 300 '
         'or (path!~"/api.*" and duration_ms <= 400 and status != 200)', 1000, False, string_and_numeric_ops)

    def json_field_case(e):
        if not svc(e, "api"):
            return None
        v = json.loads(e["line"])
        if v["status"] < 500:
            return None
        return extracted(e["labels"], {"code": str(v["status"]), "tier": v["user"]["tier"], "level": v["level"]}), e["line"]
    logs("logs_json_fields", '{service="api"} | json code="status", tier="user.tier", level | code >= 500', 30, True,
         json_field_case)

    def logfmt_field_case(e):
        if not svc(e, "worker"):
            return None
        f = logfmt_fields_of(e["line"])
        return (dict(e["labels"], job=f["job"], took=f["duration"]), e["line"]) if f["job"] == "email" else None
    logs("logs_logfmt_fields", '{service="worker"} | logfmt job, took="duration" | job="email"', 30, True, logfmt_field_case)

    WEB = re.compile(r'^(\S+) - - "(\S+) (\S+) [^"]*" (\d+) (\d+) (\d+)ms$')

    def slow_worker(e):
        if not svc(e, "worker"):
            return None
        lb = extracted(e["labels"], logfmt_fields_of(e["line"]))
        return (lb, e["line"]) if int(lb["duration"][:-2]) > 800 else None
    logs("logs_duration_filter", '{service="worker"} | logfmt | duration > 800ms', 1000, False, slow_worker)

    def big_web(e):
        if not svc(e, "web"):
            return None
        size = WEB.match(e["line"]).group(5)
        return (dict(e["labels"], size=size), e["line"]) if int(size) > 40000 else None
    logs("logs_bytes_filter", r'{service="web"} | pattern "<_> \"<_>\" <_> <size> <_>" | size > 40KB', 1000, False, big_web)

    def worker(e):
        if not svc(e, "worker"):
            return None
        lb = extracted(e["labels"], logfmt_fields_of(e["line"]))
        if not (lb["job"] == "billing" or float(lb["attempt"]) == 3):
            return None
        return lb, f'{lb["job"]} took {lb["duration"]} ({lb["level_extracted"].upper()})'
    logs("logs_logfmt_or_filter_line_format", '{service="worker"} | logfmt | job="billing" or attempt=3 | '
         'line_format "{{.job}} took {{.duration}} ({{.level_extracted | upper}})"', 200, True, worker)

    def web_pattern(e):
        if not svc(e, "web"):
            return None
        m = WEB.match(e["line"])
        if m.group(4) != "404":
            return None
        return {"method": m.group(2), "path": m.group(3), "status": m.group(4)}, e["line"]
    logs("logs_pattern_keep", r'{service="web"} | pattern "<ip> - - \"<method> <path> <_>\" <status> <size> <dur>ms" '
         '| status="404" | keep method, path, status', 1000, False, web_pattern)

    def db_regexp(e):
        if not svc(e, "db"):
            return None
        m = re.search(r"took (\d+) ms", e["line"])
        if not m or int(m.group(1)) <= 2000:
            return None
        lb = {"service": "db", "level": e["labels"]["level"], "took_ms": m.group(1),
              "svc": f'db-{e["labels"]["env"]}'}
        return lb, e["line"]
    logs("logs_regexp_label_format_drop", r'{service="db"} | regexp "took (?P<took>\\d+) ms" | took > 2000 '
         '| label_format took_ms=took, svc="{{.service}}-{{.env}}" | drop pod, env', 1000, False, db_regexp)
    logs("logs_drop_by_value", '{service="db"} | drop level="info", pod', 50, True,
         lambda e: ({k: v for k, v in e["labels"].items() if k != "pod" and not (k == "level" and v == "info")}, e["line"])
         if svc(e, "db") else None)
    logs("logs_json_parse_error_label", '{service="web"} | json', 10, True,
         lambda e: (dict(e["labels"], __error__="JSONParserErr"), e["line"]) if svc(e, "web") else None)
    logs("logs_error_filtered_out", '{service=~"api|web"} | json | __error__="" | path="/healthz"', 1000, False,
         lambda e: (api_json(e), e["line"]) if svc(e, "api") and api_json(e)["path"] == "/healthz" else None)
    logs("logs_line_filter_after_line_format", '{service="api"} | json | line_format "{{.method}} {{.path}}" |= "DELETE"',
         1000, True,
         lambda e: (api_json(e), f'{api_json(e)["method"]} {api_json(e)["path"]}')
         if svc(e, "api") and api_json(e)["method"] == "DELETE" else None)

    # ---- metric queries over [S+300, E] every 60 s ----
    mstart, mend, step = (S + 300) * NS, E * NS, 60
    steps = list(range(mstart, mend + 1, step * NS))

    def metric(name, query, evaluate):
        params = {"query": query, "start": str(mstart // NS), "end": str(mend // NS), "step": str(step)}
        cases.append({"name": name, "path": "/loki/api/v1/query_range", "params": params,
                      "expect": {"data": matrix(steps, evaluate)}})

    def counted(sel, value=lambda e: 1.0):
        return samples(entries, mstart - 600 * NS, mend, lambda e: (e["labels"], value(e)) if sel(e) else None)

    api = counted(lambda e: svc(e, "api"))
    metric("count_over_time", 'count_over_time({service="api"}[1m])',
           lambda t: range_vector(api, RANGE_FNS["count"], 60, t))
    prod_err = counted(lambda e: e["labels"]["env"] == "prod" and "error" in e["line"])
    metric("sum_by_rate", 'sum by (service) (rate({env="prod"} |= "error" [2m]))',
           lambda t: agg("sum", range_vector(prod_err, RANGE_FNS["rate"], 120, t), by=["service"]))
    db_bytes = counted(lambda e: svc(e, "db"), lambda e: float(len(e["line"].encode())))
    metric("bytes_over_time", 'bytes_over_time({service="db"}[5m])',
           lambda t: range_vector(db_bytes, RANGE_FNS["bytes"], 300, t))
    db_warn = counted(lambda e: svc(e, "db") and e["labels"]["level"] == "warn", lambda e: float(len(e["line"].encode())))
    metric("bytes_rate", 'bytes_rate({service="db", level="warn"}[5m])',
           lambda t: range_vector(db_warn, RANGE_FNS["bytes_rate"], 300, t))
    aw = counted(lambda e: svc(e, "api", "web"))

    def attempts(e):
        if not svc(e, "worker"):
            return None
        f = logfmt_fields_of(e["line"])
        return ({"job": f["job"]}, float(f["attempt"])) if int(f["attempt"]) > 1 else None
    worker_attempts = samples(entries, mstart - 600 * NS, mend, attempts)
    metric("sum_without", 'sum without (pod, level, env) (count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("sum", range_vector(aw, RANGE_FNS["count"], 300, t), without=["pod", "level", "env"]))
    metric("avg_by", 'avg by (service) (count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("avg", range_vector(aw, RANGE_FNS["count"], 300, t), by=["service"]))
    metric("min_max_count", 'max by (level) (count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("max", range_vector(aw, RANGE_FNS["count"], 300, t), by=["level"]))
    metric("min_by", 'min(count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("min", range_vector(aw, RANGE_FNS["count"], 300, t)))
    metric("stddev_by", 'stddev by (service) (count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("stddev", range_vector(aw, RANGE_FNS["count"], 300, t), by=["service"]))
    metric("unwrap_post_filter_drops_errors",
           'max_over_time({service="worker"} | logfmt | unwrap attempt | __error__="" | attempt > 1 [5m]) by (job)',
           lambda t: range_vector(worker_attempts, RANGE_FNS["max"], 300, t))
    metric("unwrap_conversion_errors_filtered",
           'max_over_time({service="worker"} | logfmt | unwrap duration | __error__="" [5m])', lambda t: [])
    metric("count_by", 'count by (service) (count_over_time({service=~"api|web"}[5m]))',
           lambda t: agg("count", range_vector(aw, RANGE_FNS["count"], 300, t), by=["service"]))

    def worker_dur(e):
        if not svc(e, "worker"):
            return None
        f = logfmt_fields_of(e["line"])
        return {"job": f["job"]}, int(f["duration"][:-2]) * 1_000_000 / 1e9
    wd = samples(entries, mstart - 600 * NS, mend, worker_dur)
    metric("avg_over_time_unwrap_duration_by", 'avg_over_time({service="worker"} | logfmt | unwrap duration(duration) [5m]) by (job)',
           lambda t: range_vector(wd, RANGE_FNS["avg"], 300, t))

    def api_ms(by):
        def f(e):
            if not svc(e, "api"):
                return None
            lb = api_json(e)
            return {k: lb[k] for k in by}, float(lb["duration_ms"])
        return samples(entries, mstart - 600 * NS, mend, f)
    by_method = api_ms(["method"])
    metric("quantile_over_time", 'quantile_over_time(0.9, {service="api"} | json | unwrap duration_ms [5m]) by (method)',
           lambda t: [(l, quantile(0.9, [v for ts, v in p if t - 300 * NS < ts <= t])) for l, p in in_label_order(by_method)
                      if any(t - 300 * NS < ts <= t for ts, _ in p)])
    metric("max_over_time", 'max_over_time({service="api"} | json | unwrap duration_ms [5m]) by (method)',
           lambda t: range_vector(by_method, RANGE_FNS["max"], 300, t))
    by_status = api_ms(["status"])
    metric("min_over_time", 'min_over_time({service="api"} | json | unwrap duration_ms [5m]) by (status)',
           lambda t: range_vector(by_status, RANGE_FNS["min"], 300, t))
    metric("sum_over_time_keep", 'sum by (method) (sum_over_time({service="api"} | json | keep method, duration_ms | unwrap duration_ms [2m]))',
           lambda t: agg("sum", range_vector(by_method, RANGE_FNS["sum"], 120, t), by=["method"]))
    errors = counted(lambda e: e["labels"]["env"] == "prod" and "error" in e["line"])
    prod = counted(lambda e: e["labels"]["env"] == "prod")

    def ratio(t):
        num_ = dict((l["service"], v) for l, v in agg("sum", range_vector(errors, RANGE_FNS["count"], 300, t), by=["service"]))
        den = dict((l["service"], v) for l, v in agg("sum", range_vector(prod, RANGE_FNS["count"], 300, t), by=["service"]))
        return [({"service": s}, num_[s] / den[s]) for s in num_ if s in den]
    metric("binary_ratio_on", 'sum by (service) (count_over_time({env="prod"} |= "error" [5m])) '
           '/ on (service) sum by (service) (count_over_time({env="prod"}[5m]))', ratio)
    per_service = counted(lambda e: True)
    metric("binary_scalar_and_filter", 'sum by (service) (count_over_time({service=~".+"}[5m])) * 2 > 600',
           lambda t: [(l, v * 2) for l, v in agg("sum", range_vector(per_service, RANGE_FNS["count"], 300, t), by=["service"])
                      if v * 2 > 600])
    db_all = counted(lambda e: svc(e, "db"))
    web_all = counted(lambda e: svc(e, "web"))
    metric("binary_bool_or", 'sum by (level) (count_over_time({service="db"}[5m])) > bool 100 '
           'or sum by (pod) (count_over_time({service="web"}[5m]))',
           lambda t: [(l, 1.0 if v > 100 else 0.0) for l, v in agg("sum", range_vector(db_all, RANGE_FNS["count"], 300, t), by=["level"])]
           + agg("sum", range_vector(web_all, RANGE_FNS["count"], 300, t), by=["pod"]))
    metric("last_over_time", 'last_over_time({service="api"} | json | unwrap duration_ms [1m]) by (method)',
           lambda t: [(l, [v for ts, v in p if t - 60 * NS < ts <= t][-1]) for l, p in in_label_order(by_method)
                      if any(t - 60 * NS < ts <= t for ts, _ in p)])
    metric("first_over_time", 'first_over_time({service="api"} | json | unwrap duration_ms [1m]) by (method)',
           lambda t: [(l, [v for ts, v in p if t - 60 * NS < ts <= t][0]) for l, p in in_label_order(by_method)
                      if any(t - 60 * NS < ts <= t for ts, _ in p)])
    metric("stddev_over_time", 'stddev_over_time({service="api"} | json | unwrap duration_ms [5m]) by (method)',
           lambda t: [(l, stddev([v for ts, v in p if t - 300 * NS < ts <= t])) for l, p in in_label_order(by_method)
                      if any(t - 300 * NS < ts <= t for ts, _ in p)])
    metric("offset", 'count_over_time({service="api"}[1m] offset 2m)',
           lambda t: range_vector(api, RANGE_FNS["count"], 60, t - 120 * NS))

    def web_size(e):
        return ({"service": "web"}, float(WEB.match(e["line"]).group(5))) if svc(e, "web") else None
    sizes = samples(entries, mstart - 600 * NS, mend, web_size)
    metric("unwrap_bytes", r'sum by (service) (sum_over_time({service="web"} | pattern "<_> \"<_>\" <_> <size> <_>" '
           '| unwrap bytes(size) [5m]))',
           lambda t: agg("sum", range_vector(sizes, RANGE_FNS["sum"], 300, t), by=["service"]))
    # With Rust stages every entry is read (the cases above are counted in SQL).
    retried = counted(lambda e: svc(e, "worker") and int(logfmt_fields_of(e["line"])["attempt"]) > 1)
    metric("count_with_rust_stages", 'sum by (service) (count_over_time({service="worker"} | logfmt | attempt > 1 [5m]))',
           lambda t: agg("sum", range_vector(retried, RANGE_FNS["count"], 300, t), by=["service"]))

    def method_bytes(e):
        if not svc(e, "api"):
            return None
        return {"service": "api"}, float(len(json.loads(e["line"])["method"].encode()))
    mb = samples(entries, mstart - 600 * NS, mend, method_bytes)
    metric("bytes_after_line_format", 'sum by (service) (bytes_over_time({service="api"} | json | line_format "{{.method}}" [5m]))',
           lambda t: agg("sum", range_vector(mb, RANGE_FNS["bytes"], 300, t), by=["service"]))
    metric("absent_over_time", 'absent_over_time({service="nope"}[1m])', lambda t: [({"service": "nope"}, 1.0)])

    # ---- instant queries at E ----
    t = E * NS

    def instant(name, query, vec):
        cases.append({"name": name, "path": "/loki/api/v1/query", "params": {"query": query, "time": str(E)},
                      "expect": {"data": vector(t, vec)}})
    everything = samples(entries, t - 600 * NS, t, lambda e: (e["labels"], 1.0))
    per_pod = agg("sum", range_vector(everything, RANGE_FNS["count"], 600, t), by=["pod"])
    instant("topk", 'topk(2, sum by (pod) (count_over_time({service=~".+"}[10m])))', topk(2, per_pod))
    workers = [(l, v) for l, v in range_vector(everything, RANGE_FNS["count"], 600, t) if l["service"] == "worker"]
    instant("bottomk", 'bottomk(1, count_over_time({service="worker"}[10m]))', topk(1, workers, largest=False))
    instant("vector_plus_vector", 'vector(1) + vector(1)', [({}, 2.0)])
    instant("instant_rate", 'sum(rate({service="db"}[10m]))',
            agg("sum", range_vector(samples(entries, t - 600 * NS, t, lambda e: (e["labels"], 1.0) if svc(e, "db") else None),
                                    RANGE_FNS["rate"], 600, t)))

    # ---- label APIs over the whole corpus ----
    span = {"start": str(lstart), "end": str(lend)}
    cases.append({"name": "labels", "path": "/loki/api/v1/labels", "params": span,
                  "expect": {"data": sorted({k for e in entries for k in e["labels"]})}})
    cases.append({"name": "label_values", "path": "/loki/api/v1/label/service/values", "params": span,
                  "expect": {"data": sorted({e["labels"]["service"] for e in entries})}})
    cases.append({"name": "label_values_of_selector", "path": "/loki/api/v1/label/pod/values",
                  "params": dict(span, query='{service="api"}'),
                  "expect": {"data": sorted({e["labels"]["pod"] for e in entries if svc(e, "api")})}})
    worker_sets = {json.dumps(key(e["labels"])): e["labels"] for e in entries if svc(e, "worker")}
    cases.append({"name": "series", "path": "/loki/api/v1/series", "params": dict(span, **{"match[]": '{service="worker"}'}),
                  "expect": {"data": [worker_sets[k] for k in sorted(worker_sets)]}})
    vol = {}
    for e in entries:
        vol[e["labels"]["service"]] = vol.get(e["labels"]["service"], 0) + len(e["line"].encode())
    ordered = sorted(vol.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    cases.append({"name": "index_volume", "path": "/loki/api/v1/index/volume",
                  "params": dict(span, query='{service=~".+"}', limit="3"),
                  "expect": {"data": {"resultType": "vector", "result": [
                      {"metric": {"service": s}, "value": [(lend // NS), str(b)]} for s, b in ordered]}}})

    # ---- errors: HTTP 400 and what the text must say ----
    def error(name, path, params, text):
        cases.append({"name": name, "path": path, "params": params, "expect": {"status": 400, "contains": text}})
    rng = {"start": str(mstart // NS), "end": str(mend // NS), "step": "60"}
    error("error_parse", "/loki/api/v1/query_range", dict(rng, query='{service="api"'),
          'parse error at line 1, col 15: syntax error: expected "}"')
    error("error_pipeline", "/loki/api/v1/query_range", dict(rng, query='count_over_time({service="web"} | json [5m])'),
          "pipeline error: 'JSONParserErr'")
    error("error_sample_extraction", "/loki/api/v1/query_range",
          dict(rng, query='max_over_time({service="worker"} | logfmt | unwrap duration [5m])'),
          "pipeline error: 'SampleExtractionErr'")
    error("error_unsupported", "/loki/api/v1/query_range", dict(rng, query='rate({service="api"} | json | unwrap duration_ms [1m])'),
          "not supported")
    error("error_instant_log_query", "/loki/api/v1/query", {"query": '{service="api"}'},
          "log queries are not supported as an instant query type")
    error("error_empty_matcher", "/loki/api/v1/query_range", dict(rng, query='{service=~".*"}'),
          "queries require at least one regexp or equality matcher")
    error("error_step", "/loki/api/v1/query_range", dict(rng, query='count_over_time({service="api"}[1m])', step="0"),
          "zero or negative query resolution step")
    error("error_time", "/loki/api/v1/query_range", dict(rng, query='{service="api"}', start="yesterday"),
          "invalid start parameter")
    print(json.dumps(cases, ensure_ascii=False))


if __name__ == "__main__":
    main()
