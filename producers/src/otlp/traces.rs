//! OTLP traces → [`Span`]s, in the vocabulary of the OTel ClickHouse exporter
//! (`Server`, `Client`, ... and `Unset`, `Ok`, `Error`).

use obs_schemas::records::{Span, SpanEvent, SpanLink};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::values::attrs;
use super::{id_hex, service_name};
use crate::error::CollectorError;

fn kind(k: i32) -> &'static str {
    match k {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

fn status(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// Flattens a request into spans for `tenant`. Every span needs a trace and span id.
pub fn normalise(
    req: ExportTraceServiceRequest,
    tenant: &str,
) -> Result<Vec<Span>, CollectorError> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource_attrs = attrs(&rs.resource.unwrap_or_default().attributes);
        let service = service_name(&resource_attrs);
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default();
            for s in ss.spans {
                let trace_id = id_hex(&s.trace_id, 16, "trace_id")?;
                let span_id = id_hex(&s.span_id, 8, "span_id")?;
                if trace_id.is_empty() || span_id.is_empty() {
                    return Err(CollectorError::BadRequest(format!(
                        "span {:?} has no trace_id or span_id; both are required",
                        s.name
                    )));
                }
                let st = s.status.unwrap_or_default();
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id: id_hex(&s.parent_span_id, 8, "parent_span_id")?,
                    trace_state: s.trace_state,
                    name: s.name,
                    kind: kind(s.kind).into(),
                    service: service.clone(),
                    start_ns: s.start_time_unix_nano as i64,
                    end_ns: s.end_time_unix_nano as i64,
                    status_code: status(st.code).into(),
                    status_message: st.message,
                    attrs: attrs(&s.attributes),
                    resource_attrs: resource_attrs.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            timestamp_ns: e.time_unix_nano as i64,
                            name: e.name,
                            attrs: attrs(&e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .into_iter()
                        .map(|l| {
                            Ok(SpanLink {
                                trace_id: id_hex(&l.trace_id, 16, "link trace_id")?,
                                span_id: id_hex(&l.span_id, 8, "link span_id")?,
                                trace_state: l.trace_state,
                                attrs: attrs(&l.attributes),
                            })
                        })
                        .collect::<Result<_, CollectorError>>()?,
                    tenant: tenant.to_string(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Format;
    use crate::otlp::decode_request;

    #[test]
    fn json_spans_normalise_with_exporter_words() {
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
          "scopeSpans":[{"scope":{"name":"lib","version":"2"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
            "name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
            "status":{"code":2,"message":"boom"},
            "events":[{"timeUnixNano":"1544712660500000000","name":"retry","attributes":[{"key":"n","value":{"intValue":"2"}}]}],
            "links":[{"traceId":"5B8EFFF798038103D269B633813FC60D","spanId":"EEE19B7EC3C1B170"}]}]}]}]}"#;
        let req = decode_request(Format::Json, body.as_bytes(), "traces").unwrap();
        let s = &normalise(req, "t").unwrap()[0];
        assert_eq!(
            (
                s.kind.as_str(),
                s.status_code.as_str(),
                s.status_message.as_str()
            ),
            ("Server", "Error", "boom")
        );
        assert_eq!(s.parent_span_id, "eee19b7ec3c1b173");
        assert_eq!(s.end_ns - s.start_ns, 1_000_000_000);
        assert_eq!(s.events[0].attrs["n"], "2");
        assert_eq!(s.links[0].trace_id, "5b8efff798038103d269b633813fc60d");
        assert_eq!(
            (
                s.service.as_str(),
                s.scope_name.as_str(),
                s.scope_version.as_str()
            ),
            ("api", "lib", "2")
        );
    }

    #[test]
    fn spans_without_ids_are_rejected() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x"}]}]}]}"#;
        let req = decode_request(Format::Json, body.as_bytes(), "traces").unwrap();
        assert!(
            normalise(req, "t")
                .unwrap_err()
                .to_string()
                .contains("no trace_id")
        );
    }
}
