//! OTLP `AnyValue`s and attribute lists as strings.

use obs_schemas::records::Attrs;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::{Map, Value as Json};

/// The value as the ClickHouse exporter stores it.
pub fn to_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => base64(b),
        Some(other) => to_json(Some(other)).to_string(),
    }
}

fn to_json(value: Option<&Value>) -> Json {
    match value {
        None => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Some(Value::BytesValue(b)) => Json::String(base64(b)),
        // An index into a profiles string table; meaningless outside profiles, kept as is.
        Some(Value::StringValueStrindex(i)) => Json::from(*i),
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| to_json(v.value.as_ref())).collect())
        }
        Some(Value::KvlistValue(kv)) => {
            let mut m = Map::new();
            for KeyValue { key, value, .. } in &kv.values {
                m.insert(
                    key.clone(),
                    to_json(value.as_ref().and_then(|v| v.value.as_ref())),
                );
            }
            Json::Object(m)
        }
    }
}

/// An attribute list as a string map (a later duplicate key wins, as in the exporter).
pub fn attrs(list: &[KeyValue]) -> Attrs {
    list.iter()
        .map(|kv| (kv.key.clone(), to_string(kv.value.as_ref())))
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn scalars_and_structures() {
        assert_eq!(to_string(Some(&v(Value::StringValue("x".into())))), "x");
        assert_eq!(to_string(Some(&v(Value::IntValue(-42)))), "-42");
        assert_eq!(to_string(Some(&v(Value::DoubleValue(1.5)))), "1.5");
        assert_eq!(to_string(Some(&v(Value::BoolValue(true)))), "true");
        assert_eq!(
            to_string(Some(&v(Value::BytesValue(b"hi!".to_vec())))),
            "aGkh"
        );
        assert_eq!(
            to_string(Some(&v(Value::BytesValue(b"h".to_vec())))),
            "aA=="
        );
        assert_eq!(to_string(None), "");
        let arr = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::IntValue(1)), v(Value::StringValue("a".into()))],
        }));
        assert_eq!(to_string(Some(&arr)), r#"[1,"a"]"#);
        let kv = v(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(v(Value::BoolValue(false))),
                ..Default::default()
            }],
        }));
        assert_eq!(to_string(Some(&kv)), r#"{"k":false}"#);
    }
}
