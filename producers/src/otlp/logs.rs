//! OTLP logs → [`LogRecord`]s.

use obs_schemas::records::LogRecord;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::values::{attrs, to_string};
use super::{id_hex, service_name};
use crate::error::CollectorError;

/// Flattens a request into records for `tenant`. `now_ns` fills missing timestamps.
pub fn normalise(
    req: ExportLogsServiceRequest,
    tenant: &str,
    now_ns: i64,
) -> Result<Vec<LogRecord>, CollectorError> {
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let resource = rl.resource.unwrap_or_default();
        let resource_attrs = attrs(&resource.attributes);
        let service = service_name(&resource_attrs);
        for sl in rl.scope_logs {
            let scope = sl.scope.unwrap_or_default();
            let scope_attrs = attrs(&scope.attributes);
            for lr in sl.log_records {
                let observed = if lr.observed_time_unix_nano > 0 {
                    lr.observed_time_unix_nano as i64
                } else {
                    now_ns
                };
                let timestamp = if lr.time_unix_nano > 0 {
                    lr.time_unix_nano as i64
                } else {
                    observed
                };
                out.push(LogRecord {
                    timestamp_ns: timestamp,
                    observed_timestamp_ns: observed,
                    severity_text: lr.severity_text,
                    severity_number: lr.severity_number,
                    body: to_string(lr.body.as_ref()),
                    service: service.clone(),
                    trace_id: id_hex(&lr.trace_id, 16, "trace_id")?,
                    span_id: id_hex(&lr.span_id, 8, "span_id")?,
                    trace_flags: (lr.flags & 0xff) as i32,
                    event_name: lr.event_name,
                    resource_schema_url: rl.schema_url.clone(),
                    resource_attrs: resource_attrs.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    scope_schema_url: sl.schema_url.clone(),
                    scope_attrs: scope_attrs.clone(),
                    attrs: attrs(&lr.attributes),
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
    use crate::otlp::{UNKNOWN_SERVICE, decode_request};

    /// The OTLP/JSON example from the OTLP specification's repository (logs.json), trimmed.
    const SPEC_EXAMPLE: &str = r#"{
      "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeLogs": [{
          "scope": {"name": "my.library", "version": "1.0.0",
                    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
          "logRecords": [{
            "timeUnixNano": "1544712660300000000",
            "observedTimeUnixNano": "1544712660300000000",
            "severityNumber": 10,
            "severityText": "Information",
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "body": {"stringValue": "Example log record"},
            "attributes": [
              {"key": "string.attribute", "value": {"stringValue": "some string"}},
              {"key": "boolean.attribute", "value": {"boolValue": true}},
              {"key": "int.attribute", "value": {"intValue": "10"}},
              {"key": "double.attribute", "value": {"doubleValue": 637.704}},
              {"key": "array.attribute", "value": {"arrayValue": {"values": [{"stringValue": "many"}, {"stringValue": "values"}]}}},
              {"key": "map.attribute", "value": {"kvlistValue": {"values": [{"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}
            ]
          }]
        }]
      }]
    }"#;

    #[test]
    fn spec_json_example_normalises() {
        let req = decode_request(Format::Json, SPEC_EXAMPLE.as_bytes(), "logs").unwrap();
        let recs = normalise(req, "acme", 7).unwrap();
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.timestamp_ns, 1_544_712_660_300_000_000);
        assert_eq!(r.severity_number, 10);
        assert_eq!(r.severity_text, "Information");
        assert_eq!(r.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(r.span_id, "eee19b7ec3c1b174");
        assert_eq!(r.body, "Example log record");
        assert_eq!(r.service, "my.service");
        assert_eq!(r.scope_name, "my.library");
        assert_eq!(r.scope_attrs["my.scope.attribute"], "some scope attribute");
        assert_eq!(r.attrs["int.attribute"], "10");
        assert_eq!(r.attrs["boolean.attribute"], "true");
        assert_eq!(r.attrs["double.attribute"], "637.704");
        assert_eq!(r.attrs["array.attribute"], r#"["many","values"]"#);
        assert_eq!(r.attrs["map.attribute"], r#"{"some.map.key":"some value"}"#);
        assert_eq!(r.tenant, "acme");
    }

    #[test]
    fn missing_times_and_service_get_defaults() {
        let body =
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
        let req = decode_request(Format::Json, body.as_bytes(), "logs").unwrap();
        let r = &normalise(req, "t", 99).unwrap()[0];
        assert_eq!((r.timestamp_ns, r.observed_timestamp_ns), (99, 99));
        assert_eq!(r.service, UNKNOWN_SERVICE);
        assert_eq!(r.trace_id, "");
    }

    #[test]
    fn wrong_id_length_is_rejected() {
        let body = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"abcd"}]}]}]}"#;
        let req = decode_request(Format::Json, body.as_bytes(), "logs").unwrap();
        let e = normalise(req, "t", 1).unwrap_err().to_string();
        assert!(e.contains("trace_id"), "{e}");
    }

    #[test]
    fn truncated_protobuf_is_rejected_with_a_reason() {
        let e = decode_request::<ExportLogsServiceRequest>(
            Format::Protobuf,
            &[0x0a, 0x10, 0x01],
            "logs",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("invalid OTLP protobuf logs"), "{e}");
    }
}
