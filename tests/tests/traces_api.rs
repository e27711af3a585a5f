//! The trace query API end to end: spans sent by the OpenTelemetry Python SDK for two
//! tenants → collector → Kafka → sink → otel_traces, then read back through the Jaeger and
//! Tempo APIs the way Grafana's Jaeger and Tempo datasources call them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::{Stack, http, run_python_sender, wait_for};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};

/// Tempo's `TraceByIDResponse` as Grafana decodes it: `trace = 1` has the layout of
/// `TracesData`.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

/// The fields of a protobuf span the Tempo test compares.
#[derive(Debug, PartialEq)]
struct ProtoSpan {
    service: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    start: u64,
    end: u64,
    status: i32,
}

const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;

/// One span as the sender describes it.
#[derive(Debug, Clone, Deserialize)]
struct Sent {
    tenant: String,
    service: String,
    resource: BTreeMap<String, String>,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: String,
    start_ns: i64,
    end_ns: i64,
    attributes: BTreeMap<String, String>,
    status_code: String,
    status_message: String,
    events: Vec<SentEvent>,
}

#[derive(Debug, Clone, Deserialize)]
struct SentEvent {
    name: String,
    timestamp_ns: i64,
    attributes: BTreeMap<String, String>,
}

/// A stack holding the scenarios of `send_trace_scenarios.py` for tenants acme and umbrella.
struct World {
    stack: Stack,
    base: i64,
    spans: Vec<Sent>,
}

impl World {
    async fn start() -> World {
        let stack = Stack::start().await.unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        // Whole second, two minutes ago: every span is in the past and current (TTL).
        let base = (now - 120 * S) / S * S;
        let endpoint = format!("http://127.0.0.1:{}/v1/traces", stack.ports.otlp_http);
        let mut spans = Vec::new();
        for scenario in ["acme", "umbrella"] {
            spans.extend(run_python_sender::<Sent>(
                "send_trace_scenarios.py",
                &[
                    "--endpoint",
                    &endpoint,
                    "--scenario",
                    scenario,
                    "--base-ns",
                    &base.to_string(),
                ],
            ));
        }
        assert_eq!(spans.len(), 7);
        let db = stack.db();
        // Every sent span, by its own id, stored and covered by the trace-id index (the
        // materialized view's rows may become visible a moment after the spans'). Distinct
        // ids, not rows: a duplicated span must not make the wait pass early.
        let sent: BTreeSet<(String, String)> = spans
            .iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect();
        let indexed = "SELECT DISTINCT t.TraceId, t.SpanId \
             FROM otel_traces AS t INNER JOIN \
             (SELECT TraceId, min(Start) AS s, max(End) AS e \
              FROM otel_traces_trace_id_ts GROUP BY TraceId) AS i \
             ON t.TraceId = i.TraceId \
             WHERE t.Timestamp >= i.s AND t.Timestamp < i.e + INTERVAL 1 SECOND";
        wait_for(
            "the 7 sent span ids in otel_traces and its trace-id index",
            Duration::from_secs(60),
            || {
                let db = db.clone();
                let sent = sent.clone();
                async move {
                    let got: Vec<(String, String)> = db.query(indexed).fetch_all().await.ok()?;
                    (got.into_iter().collect::<BTreeSet<_>>() == sent).then_some(())
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
        // Each exactly once: a duplicate is a defect of its own, named here.
        let dups: Vec<(String, String, u64)> = db
            .query(
                "SELECT TraceId, SpanId, count() AS n FROM otel_traces \
                 GROUP BY TraceId, SpanId HAVING n > 1",
            )
            .fetch_all()
            .await
            .unwrap();
        assert!(dups.is_empty(), "spans stored more than once: {dups:?}");
        // The spans are two minutes old: searches find their traces through the trace
        // processor's summaries (four traces), once it has decided them.
        let db = stack.db();
        wait_for("4 trace summaries", Duration::from_secs(90), || {
            let db = db.clone();
            async move {
                let n: u64 = db
                    .query("SELECT uniqExact(TraceId) FROM obs_trace_summaries")
                    .fetch_one()
                    .await
                    .ok()?;
                (n >= 4).then_some(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
        // Every trace is kept (no tail-sampling policies) and nothing reads the kept
        // spans: the processor does not copy obs.spans to obs.spans.sampled.
        assert_eq!(stack.messages_on("obs.spans.sampled").unwrap(), 0);
        World { stack, base, spans }
    }

    /// `GET path?query` as `tenant` (no header when `None`): status and body.
    async fn get(&self, tenant: Option<&str>, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        self.get_with(tenant, path, query, None).await
    }

    async fn get_with(
        &self,
        tenant: Option<&str>,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
    ) -> (u16, String) {
        let mut req = http(30)
            .get(format!("{}{path}", self.stack.query_url()))
            .query(query);
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// A JSON answer that must be 200.
    async fn json(&self, tenant: Option<&str>, path: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(tenant, path, query).await;
        assert_eq!(status, 200, "{path} {query:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The sent span named `name` (of service `service`).
    fn span(&self, service: &str, name: &str) -> &Sent {
        let found: Vec<&Sent> = self
            .spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        found[0]
    }

    /// Trace ids, by scenario: checkout (4 spans), home, slow (acme), secret (umbrella).
    fn ids(&self) -> (String, String, String, String) {
        let checkout = self.span("payments", "charge").trace_id.clone();
        let home = self.span("frontend", "GET /home").trace_id.clone();
        let slow = self
            .spans
            .iter()
            .find(|s| s.name == "GET /checkout" && s.attributes.contains_key("customer.tier"))
            .unwrap()
            .trace_id
            .clone();
        let secret = self.span("ledger", "GET /secret").trace_id.clone();
        (checkout, home, slow, secret)
    }

    /// The Jaeger search as `tenant`: the trace ids found, in order.
    async fn jaeger_search(&self, tenant: &str, query: &[(&str, &str)]) -> Vec<String> {
        let v = self.json(Some(tenant), "/api/traces", query).await;
        assert_eq!(v["errors"], Value::Null, "{v}");
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(v["total"], ids.len());
        ids
    }

    /// The Tempo search as `tenant`: the trace ids found, in order.
    async fn tempo_search(&self, tenant: &str, query: &[(&str, &str)]) -> Vec<String> {
        let v = self.json(Some(tenant), "/api/search", query).await;
        v["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect()
    }
}

fn tag(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

/// The Jaeger trace the sent spans of `trace_id` must come back as.
fn expected_jaeger(spans: &[Sent], trace_id: &str) -> Value {
    let mut of_trace: Vec<&Sent> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    of_trace.sort_by_key(|s| (s.start_ns, s.span_id.clone()));
    let mut services: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for s in &of_trace {
        if !services.contains(&s.service.as_str()) {
            services.push(&s.service);
        }
        let p = services.iter().position(|x| *x == s.service).unwrap() + 1;
        let mut tags: Vec<Value> = s.attributes.iter().map(|(k, v)| tag(k, v)).collect();
        tags.push(tag("span.kind", &s.kind));
        tags.push(tag("otel.scope.name", "obs.e2e.scenarios"));
        tags.push(tag("otel.scope.version", "1.2"));
        if s.status_code == "ERROR" {
            tags.push(tag("otel.status_code", "ERROR"));
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        if !s.status_message.is_empty() {
            tags.push(tag("otel.status_description", &s.status_message));
        }
        let references = if s.parent_span_id.is_empty() {
            json!([])
        } else {
            json!([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": s.parent_span_id}])
        };
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![tag("event", &e.name)];
                fields.extend(e.attributes.iter().map(|(k, v)| tag(k, v)));
                json!({"timestamp": e.timestamp_ns / 1000, "fields": fields})
            })
            .collect();
        out.push(json!({
            "traceID": trace_id,
            "spanID": s.span_id,
            "operationName": s.name,
            "references": references,
            "startTime": s.start_ns / 1000,
            "duration": (s.end_ns - s.start_ns) / 1000,
            "tags": tags,
            "logs": logs,
            "processID": format!("p{p}"),
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Value> = services
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let s = of_trace.iter().find(|s| s.service == *name).unwrap();
            let tags: Vec<Value> = s
                .resource
                .iter()
                .filter(|(k, _)| *k != "service.name")
                .map(|(k, v)| tag(k, v))
                .collect();
            (
                format!("p{}", i + 1),
                json!({"serviceName": name, "tags": tags}),
            )
        })
        .collect();
    json!({"traceID": trace_id, "spans": out, "processes": processes, "warnings": null})
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_api_answers_as_grafanas_jaeger_datasource_reads_it() {
    let w = World::start().await;
    let acme = Some("acme");
    let (checkout, home, slow, _) = w.ids();

    // "Save & test" and the service picker: GET /api/services → {"data": [...]}.
    let v = w.json(acme, "/api/services", &[]).await;
    assert_eq!(
        v,
        json!({"data": ["frontend", "payments"], "total": 2, "limit": 0, "offset": 0, "errors": null})
    );
    // The operation picker.
    let v = w.json(acme, "/api/services/frontend/operations", &[]).await;
    assert_eq!(
        v["data"],
        json!(["GET /checkout", "GET /home", "POST /pay"])
    );
    let v = w
        .json(acme, "/api/operations", &[("service", "payments")])
        .await;
    assert_eq!(
        v["data"],
        json!([{"name": "charge", "spanKind": "server"}, {"name": "db.query", "spanKind": "internal"}])
    );
    let v = w
        .json(
            acme,
            "/api/operations",
            &[("service", "frontend"), ("spanKind", "client")],
        )
        .await;
    assert_eq!(
        v["data"],
        json!([{"name": "POST /pay", "spanKind": "client"}])
    );

    // Trace by id: the exact Jaeger JSON, every span, reference, duration (µs) and tag.
    let v = w.json(acme, &format!("/api/traces/{checkout}"), &[]).await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["errors"], Value::Null);
    assert_eq!(v["data"][0]["spans"].as_array().unwrap().len(), 4);
    assert_eq!(v["data"][0], expected_jaeger(&w.spans, &checkout));
    // Upper case ids are the same trace.
    let v = w
        .json(
            acme,
            &format!("/api/traces/{}", checkout.to_uppercase()),
            &[],
        )
        .await;
    assert_eq!(v["data"][0]["traceID"], checkout);
    // Not found: Jaeger's error shape with 404.
    let (status, body) = w
        .get(acme, "/api/traces/0123456789abcdef0123456789abcdef", &[])
        .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"], Value::Null);
    assert_eq!(
        v["errors"],
        json!([{"code": 404, "msg": "trace not found"}])
    );
    let (status, body) = w.get(acme, "/api/traces/not-hex", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid trace id"), "{body}");

    // Search as Grafana's Jaeger datasource sends it (times in µs, tags as JSON).
    let start_us = ((w.base - 60 * S) / 1000).to_string();
    let end_us = ((w.base + 60 * S) / 1000).to_string();
    let range = [("start", start_us.as_str()), ("end", end_us.as_str())];
    let search = |extra: &[(&'static str, &'static str)]| {
        let mut q: Vec<(&str, &str)> = range.to_vec();
        q.extend_from_slice(extra);
        q
    };
    assert_eq!(
        w.jaeger_search("acme", &search(&[("service", "frontend"), ("limit", "20")]))
            .await,
        [slow.as_str(), home.as_str(), checkout.as_str()],
        "newest first"
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[("service", "frontend"), ("operation", "GET /checkout")])
        )
        .await,
        [slow.as_str(), checkout.as_str()]
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[
                ("service", "frontend"),
                ("tags", r#"{"http.route":"/home"}"#)
            ])
        )
        .await,
        [home.as_str()]
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[("service", "frontend"), ("tags", "http.route=/home")])
        )
        .await,
        [home.as_str()],
        "logfmt tags too"
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[("service", "payments"), ("tags", r#"{"error":"true"}"#)])
        )
        .await,
        [checkout.as_str()]
    );
    // A resource attribute is a tag too.
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[
                ("service", "payments"),
                (
                    "tags",
                    r#"{"deployment.environment":"e2e","db.system":"postgresql"}"#
                )
            ])
        )
        .await,
        [checkout.as_str()]
    );
    assert!(
        w.jaeger_search(
            "acme",
            &search(&[
                ("service", "payments"),
                ("tags", r#"{"db.system":"mysql"}"#)
            ])
        )
        .await
        .is_empty()
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[("service", "frontend"), ("minDuration", "100ms")])
        )
        .await,
        [slow.as_str()]
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[("service", "frontend"), ("maxDuration", "10ms")])
        )
        .await,
        [home.as_str()]
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &search(&[
                ("service", "frontend"),
                ("minDuration", "30ms"),
                ("maxDuration", "60ms")
            ])
        )
        .await,
        [checkout.as_str()]
    );
    assert_eq!(
        w.jaeger_search("acme", &search(&[("service", "frontend"), ("limit", "1")]))
            .await,
        [slow.as_str()]
    );
    // Time range: only the home trace started between base+5s and base+15s.
    let (from, to) = (
        ((w.base + 5 * S) / 1000).to_string(),
        ((w.base + 15 * S) / 1000).to_string(),
    );
    assert_eq!(
        w.jaeger_search(
            "acme",
            &[("service", "frontend"), ("start", &from), ("end", &to)]
        )
        .await,
        [home.as_str()]
    );
    // A search returns whole traces: the payments match brings all four spans.
    let v = w
        .json(
            acme,
            "/api/traces",
            &search(&[("service", "payments"), ("operation", "db.query")]),
        )
        .await;
    assert_eq!(v["data"][0], expected_jaeger(&w.spans, &checkout));
    // Jaeger requires the service; bad durations and tags are 400s with the reason.
    for (q, why) in [
        (search(&[]), "parameter 'service' is required"),
        (
            search(&[("service", "frontend"), ("minDuration", "fast")]),
            "invalid duration",
        ),
        (
            search(&[("service", "frontend"), ("tags", "{broken")]),
            "invalid tags",
        ),
    ] {
        let (status, body) = w.get(acme, "/api/traces", &q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], 400);
        assert!(
            v["errors"][0]["msg"].as_str().unwrap().contains(why),
            "{body}"
        );
    }

    // The dependency graph: frontend calls payments once.
    let end_ms = ((w.base + 60 * S) / MS).to_string();
    let v = w
        .json(
            acme,
            "/api/dependencies",
            &[("endTs", end_ms.as_str()), ("lookback", "3600000")],
        )
        .await;
    assert_eq!(
        v["data"],
        json!([{"parent": "frontend", "child": "payments", "callCount": 1}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tempo_api_answers_as_grafanas_tempo_datasource_reads_it() {
    let w = World::start().await;
    let acme = Some("acme");
    let (checkout, home, slow, _) = w.ids();

    // "Save & test".
    assert_eq!(
        w.get(None, "/api/echo", &[]).await,
        (200, "echo".to_string())
    );

    // Trace by id as the Tempo datasource asks: protobuf TracesData, with start/end seconds.
    let (start_s, end_s) = (
        ((w.base - 60 * S) / S).to_string(),
        ((w.base + 60 * S) / S).to_string(),
    );
    let resp = http(30)
        .get(format!("{}/api/traces/{checkout}", w.stack.query_url()))
        .query(&[("start", &start_s), ("end", &end_s)])
        .header("Accept", "application/protobuf")
        .header("X-Scope-OrgID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/protobuf");
    let data = TracesData::decode(resp.bytes().await.unwrap()).unwrap();
    let mut got: Vec<ProtoSpan> = Vec::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        let Some(AnyValue::StringValue(service)) = service else {
            panic!("no service.name in {rs:?}");
        };
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().unwrap();
            assert_eq!(
                (scope.name.as_str(), scope.version.as_str()),
                ("obs.e2e.scenarios", "1.2")
            );
            for s in &ss.spans {
                assert_eq!(hex::encode(&s.trace_id), checkout);
                got.push(ProtoSpan {
                    service: service.clone(),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    status: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    got.sort_by_key(|g| g.start);
    let kind = |k: &str| match k {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        _ => 0,
    };
    let mut want: Vec<_> = w
        .spans
        .iter()
        .filter(|s| s.trace_id == checkout)
        .map(|s| ProtoSpan {
            service: s.service.clone(),
            span_id: s.span_id.clone(),
            parent_span_id: s.parent_span_id.clone(),
            name: s.name.clone(),
            kind: kind(&s.kind),
            start: s.start_ns as u64,
            end: s.end_ns as u64,
            status: if s.status_code == "ERROR" { 2 } else { 0 },
        })
        .collect();
    want.sort_by_key(|g| g.start);
    assert_eq!(got, want);
    // Current Grafana asks /api/v2/traces first: Tempo's TraceByIDResponse, the same trace.
    let resp = http(30)
        .get(format!("{}/api/v2/traces/{checkout}", w.stack.query_url()))
        .query(&[("start", &start_s), ("end", &end_s)])
        .header("Accept", "application/protobuf")
        .header("X-Scope-OrgID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v2 = TraceByIdResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v2.trace, Some(data));
    // Its fallback to v1 happens on 404: an unknown trace is 404 on v2 too.
    let (status, _) = w
        .get_with(
            acme,
            "/api/v2/traces/0123456789abcdef0123456789abcdef",
            &[],
            Some("application/protobuf"),
        )
        .await;
    assert_eq!(status, 404);
    // Unknown trace: 404 in Tempo's plain-text shape.
    let (status, body) = w
        .get_with(
            acme,
            "/api/traces/0123456789abcdef0123456789abcdef",
            &[],
            Some("application/protobuf"),
        )
        .await;
    assert_eq!((status, body.as_str()), (404, "trace not found"));

    // OTLP/JSON: ?format=otlp and Tempo 2's /api/v2/traces.
    let v = w
        .json(
            acme,
            &format!("/api/traces/{checkout}"),
            &[("format", "otlp")],
        )
        .await;
    let v2 = w
        .json(acme, &format!("/api/v2/traces/{checkout}"), &[])
        .await;
    assert_eq!(v2["trace"], v);
    let spans: Vec<&Value> = v["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .collect();
    assert_eq!(spans.len(), 4);
    let charge = w.span("payments", "charge");
    let c = spans.iter().find(|s| s["name"] == "charge").unwrap();
    assert_eq!(c["spanId"], charge.span_id);
    assert_eq!(c["parentSpanId"], charge.parent_span_id);
    assert_eq!(c["startTimeUnixNano"], charge.start_ns.to_string());
    assert_eq!(c["endTimeUnixNano"], charge.end_ns.to_string());
    assert_eq!(c["status"], json!({"code": 2, "message": "card declined"}));
    assert_eq!(
        c["attributes"],
        json!([{"key": "payment.method", "value": {"stringValue": "card"}}])
    );
    assert_eq!(c["events"][0]["name"], "retry");

    // Search (the Tempo datasource's tag search; start/end in seconds).
    let range = [("start", start_s.as_str()), ("end", end_s.as_str())];
    let q = |extra: &[(&'static str, &'static str)]| {
        let mut q: Vec<(&str, &str)> = range.to_vec();
        q.extend_from_slice(extra);
        q
    };
    let v = w
        .json(
            acme,
            "/api/search",
            &q(&[("tags", "service.name=frontend")]),
        )
        .await;
    let root = w
        .spans
        .iter()
        .find(|s| s.trace_id == checkout && s.parent_span_id.is_empty())
        .unwrap();
    let slow_root = w.spans.iter().find(|s| s.trace_id == slow).unwrap();
    let home_root = w.spans.iter().find(|s| s.trace_id == home).unwrap();
    let summary = |s: &Sent, ms: i64| {
        json!({
            "traceID": s.trace_id,
            "rootServiceName": "frontend",
            "rootTraceName": s.name,
            "startTimeUnixNano": s.start_ns.to_string(),
            "durationMs": ms,
        })
    };
    assert_eq!(
        v["traces"],
        json!([
            summary(slow_root, 200),
            summary(home_root, 5),
            summary(root, 50)
        ])
    );
    // Matching a payments span still names the trace's root.
    let v = w
        .json(
            acme,
            "/api/search",
            &q(&[("tags", "service.name=payments")]),
        )
        .await;
    assert_eq!(v["traces"], json!([summary(root, 50)]));
    assert_eq!(
        w.tempo_search(
            "acme",
            &q(&[
                ("tags", r#"name="GET /checkout""#),
                ("minDuration", "100ms")
            ])
        )
        .await,
        [slow.as_str()]
    );
    assert_eq!(
        w.tempo_search("acme", &q(&[("tags", "status.code=error")]))
            .await,
        [checkout.as_str()]
    );
    assert_eq!(
        w.tempo_search(
            "acme",
            &q(&[("tags", "customer.tier=gold"), ("limit", "5")])
        )
        .await,
        [slow.as_str()]
    );
    // Tempo's durations are the trace's: the checkout's db.query lasts 5 ms, its trace 50.
    assert_eq!(
        w.tempo_search("acme", &q(&[("maxDuration", "6ms")])).await,
        [home.as_str()]
    );
    assert_eq!(
        w.tempo_search(
            "acme",
            &q(&[("tags", "service.name=payments"), ("minDuration", "45ms")])
        )
        .await,
        [checkout.as_str()],
        "the payments spans last 30 and 5 ms, their trace 50"
    );
    // The time range alone (seconds): only the slow trace started in [base+15s, base+25s].
    let (from, to) = ((w.base / S + 15).to_string(), (w.base / S + 25).to_string());
    assert_eq!(
        w.tempo_search("acme", &[("start", &from), ("end", &to)])
            .await,
        [slow.as_str()]
    );
    // TraceQL is refused, saying so.
    let (status, body) = w
        .get(
            acme,
            "/api/search",
            &q(&[("q", "{ .http.route = \"/home\" }")]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("TraceQL"), "{body}");

    // Tag names and values (v1), as the search editor's autocomplete asks.
    let v = w.json(acme, "/api/search/tags", &[]).await;
    let mut want: BTreeSet<String> = w
        .spans
        .iter()
        .filter(|s| s.tenant == "acme")
        .flat_map(|s| s.attributes.keys().chain(s.resource.keys()).cloned())
        .collect();
    want.extend(["name", "service.name", "span.kind", "status.code"].map(String::from));
    assert_eq!(v["tagNames"], json!(want));
    let v = w
        .json(acme, "/api/search/tag/service.name/values", &[])
        .await;
    assert_eq!(v, json!({"tagValues": ["frontend", "payments"]}));
    let v = w.json(acme, "/api/search/tag/http.route/values", &[]).await;
    assert_eq!(v, json!({"tagValues": ["/checkout", "/home"]}));
    // v2: scoped names and typed values.
    let v = w.json(acme, "/api/v2/search/tags", &[]).await;
    assert_eq!(v["scopes"][0]["name"], "resource");
    assert_eq!(v["scopes"][1]["name"], "span");
    assert_eq!(
        v["scopes"][1]["tags"],
        json!(["customer.tier", "db.system", "http.route", "payment.method"])
    );
    assert_eq!(
        v["scopes"][2],
        json!({"name": "intrinsic", "tags": ["kind", "name", "status"]})
    );
    let v = w
        .json(acme, "/api/v2/search/tag/resource.service.name/values", &[])
        .await;
    assert_eq!(
        v,
        json!({"tagValues": [{"type": "string", "value": "frontend"}, {"type": "string", "value": "payments"}]})
    );
    let v = w.json(acme, "/api/v2/search/tag/status/values", &[]).await;
    assert_eq!(
        v,
        json!({"tagValues": [{"type": "keyword", "value": "error"}, {"type": "keyword", "value": "unset"}]})
    );

    // Search reads decided traces from the processor's summaries and assembles only recent
    // ones from their spans. Two spans written straight to `otel_traces` stand for traces the
    // processor never decides: the one started now is found (from its spans), the one two
    // minutes old is not (an old trace is found only through its summary).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for (trace, start) in [
        ("0000000000000000000000000000d1d1", now - S),
        ("0000000000000000000000000000d0d0", w.base + 30 * S),
    ] {
        w.stack
            .db()
            .query(
                "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, \
                 SpanKind, ServiceName, Duration, StatusCode, Tenant) VALUES \
                 (fromUnixTimestamp64Nano(toInt64(?)), ?, '00000000000000d1', '', 'direct', \
                 'Server', 'direct', 7000000, 'Unset', 'acme')",
            )
            .bind(start)
            .bind(trace)
            .execute()
            .await
            .unwrap();
    }
    let (from, to) = ((w.base / S).to_string(), (now / S + 60).to_string());
    let v = w
        .json(
            acme,
            "/api/search",
            &[
                ("tags", "service.name=direct"),
                ("start", &from),
                ("end", &to),
            ],
        )
        .await;
    assert_eq!(
        v["traces"],
        json!([{
            "traceID": "0000000000000000000000000000d1d1",
            "rootServiceName": "direct",
            "rootTraceName": "direct",
            "startTimeUnixNano": (now - S).to_string(),
            "durationMs": 7,
        }])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_and_values_never_reach_the_sql_text() {
    let w = World::start().await;
    let (checkout, _, _, secret) = w.ids();
    let umbrella = Some("umbrella");

    // Each tenant sees its own services, traces and search results only.
    let v = w.json(umbrella, "/api/services", &[]).await;
    assert_eq!(v["data"], json!(["ledger"]));
    let v = w.json(None, "/api/services", &[]).await;
    assert_eq!(v["data"], json!([]), "the default tenant has no traces");
    let (status, _) = w
        .get(umbrella, &format!("/api/traces/{checkout}"), &[])
        .await;
    assert_eq!(status, 404, "another tenant's trace is not found");
    let (status, _) = w
        .get_with(
            umbrella,
            &format!("/api/traces/{checkout}"),
            &[],
            Some("application/protobuf"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = w
        .get(Some("acme"), &format!("/api/traces/{secret}"), &[])
        .await;
    assert_eq!(status, 404);
    assert!(
        w.jaeger_search("umbrella", &[("service", "frontend")])
            .await
            .is_empty()
    );
    assert_eq!(
        w.tempo_search("umbrella", &[("tags", "http.route=/checkout")])
            .await,
        [secret.as_str()]
    );
    let v = w
        .json(umbrella, "/api/search/tag/http.route/values", &[])
        .await;
    assert_eq!(v, json!({"tagValues": ["/checkout"]}));
    let (status, body) = w.get(Some("a'b"), "/api/services", &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid X-Scope-OrgID"), "{body}");

    // Injection attempts are values: they find nothing and break nothing.
    for (service, tags, operation) in [
        ("frontend' OR '1'='1", "", ""),
        ("frontend", r#"{"http.route":"x' OR 1=1 --"}"#, ""),
        ("frontend", r#"{"a'] = '' OR 1=1 --":"x"}"#, ""),
        ("frontend", r#"{"error":"true') OR (1=1"}"#, ""),
        ("frontend", "", "'; DROP TABLE otel_traces; --"),
        ("frontend\\", "", "\\'"),
    ] {
        let mut q = vec![("service", service)];
        if !tags.is_empty() {
            q.push(("tags", tags));
        }
        if !operation.is_empty() {
            q.push(("operation", operation));
        }
        assert!(
            w.jaeger_search("acme", &q).await.is_empty(),
            "{q:?} found something"
        );
    }
    assert!(
        w.tempo_search("acme", &[("tags", r#"service.name="x' OR 1=1 --""#)])
            .await
            .is_empty()
    );
    let v = w
        .json(
            Some("acme"),
            "/api/services/frontend' OR 1=1 --/operations",
            &[],
        )
        .await;
    assert_eq!(v["data"], json!([]));
    let v = w
        .json(Some("acme"), "/api/search/tag/x'] OR 1=1 --/values", &[])
        .await;
    assert_eq!(v, json!({"tagValues": []}));
    let n: u64 = w
        .stack
        .db()
        .query("SELECT count() FROM otel_traces")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 7);

    // Ad-hoc SQL sees the tenant's rows of the traces and the trace-id index only.
    for (tenant, spans, traces) in [("acme", 6, 3), ("umbrella", 1, 1), ("default", 0, 0)] {
        let (status, body) = w
            .get(
                Some(tenant),
                "/api/v1/sql",
                &[
                    (
                        "query",
                        "SELECT (SELECT count() FROM otel_traces) AS spans, (SELECT count(DISTINCT TraceId) FROM otel_traces_trace_id_ts) AS traces",
                    ),
                    ("format", "csv"),
                ],
            )
            .await;
        assert_eq!(
            (status, body),
            (200, format!("\"spans\",\"traces\"\n{spans},{traces}\n")),
            "{tenant}"
        );
    }
}

/// A trace whose span starts late in its second (here 0.9 s past it) is found by id with
/// that span: the lookup compares span times with the index's whole seconds exactly (it
/// once lost such spans, one trace in two).
#[tokio::test(flavor = "multi_thread")]
async fn a_span_late_in_its_second_is_found_by_id() {
    let stack = Stack::start().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let start = (now - 60 * S) / S * S + 900 * MS;
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "late"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id,
            "spanId": "00f067aa0ba902b7",
            "name": "GET /late",
            "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 5 * MS).to_string()
        }]}]
    }]});
    let r = http(30)
        .post(format!(
            "http://127.0.0.1:{}/v1/traces",
            stack.ports.otlp_http
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let db = stack.db();
    wait_for(
        "the span and its index row",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                let n: u64 = db
                    .query(
                        "SELECT ifNull((SELECT count() FROM otel_traces WHERE TraceId = ?), 0) \
                     + ifNull((SELECT count() FROM otel_traces_trace_id_ts WHERE TraceId = ?), 0)",
                    )
                    .bind(trace_id)
                    .bind(trace_id)
                    .fetch_one()
                    .await
                    .ok()?;
                (n == 2).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let r = http(30)
        .get(format!("{}/api/traces/{trace_id}", stack.query_url()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"][0]["spans"][0]["operationName"], "GET /late",
        "{v}"
    );
}
