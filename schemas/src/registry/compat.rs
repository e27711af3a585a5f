//! Compatibility levels as Confluent defines them, checked with Avro schema resolution.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

/// How a new schema version must relate to earlier ones (Confluent's names and meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest one (the default).
    #[default]
    Backward,
    /// The new schema can read data written with every earlier one.
    BackwardTransitive,
    /// The latest schema can read data written with the new one.
    Forward,
    /// Every earlier schema can read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against every earlier one.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Parses Confluent's spelling (`BACKWARD`, `FULL_TRANSITIVE`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    /// Confluent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Checks `new` against the existing versions (oldest first). Returns the reasons it
    /// is incompatible; empty means compatible.
    pub fn check(self, new: &Schema, existing: &[Schema]) -> Vec<String> {
        if self == CompatibilityLevel::None || existing.is_empty() {
            return vec![];
        }
        let against: &[Schema] = if self.transitive() {
            existing
        } else {
            &existing[existing.len() - 1..]
        };
        let backward = !matches!(
            self,
            CompatibilityLevel::Forward | CompatibilityLevel::ForwardTransitive
        );
        let forward = !matches!(
            self,
            CompatibilityLevel::Backward | CompatibilityLevel::BackwardTransitive
        );
        let mut problems = vec![];
        for old in against {
            if backward && let Err(e) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "new schema cannot read data written by an earlier one: {e}"
                ));
            }
            if forward && let Err(e) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "an earlier schema cannot read data written by the new one: {e}"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn adding_a_field_with_default_is_backward_compatible() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
        assert!(
            CompatibilityLevel::Backward
                .check(&v2, std::slice::from_ref(&v1))
                .is_empty()
        );
        assert!(CompatibilityLevel::Full.check(&v2, &[v1]).is_empty());
    }

    #[test]
    fn adding_a_field_without_default_is_not_backward_compatible() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        assert_eq!(
            CompatibilityLevel::Backward
                .check(&v2, std::slice::from_ref(&v1))
                .len(),
            1
        );
        // Forward only asks that the old schema reads new data: it ignores the extra field.
        assert!(
            CompatibilityLevel::Forward
                .check(&v2, std::slice::from_ref(&v1))
                .is_empty()
        );
        assert!(CompatibilityLevel::None.check(&v2, &[v1]).is_empty());
    }

    #[test]
    fn transitive_checks_every_version() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string","default":"x"}"#);
        let v3 = schema(r#"{"name":"b","type":"int","default":1}"#);
        // v3 drops `a`: it reads v2 data fine (extra field ignored) and v1 too.
        assert!(
            CompatibilityLevel::BackwardTransitive
                .check(&v3, &[v1.clone(), v2.clone()])
                .is_empty()
        );
        let v4 = schema(r#"{"name":"a","type":"int"}"#);
        assert!(
            !CompatibilityLevel::BackwardTransitive
                .check(&v4, &[v1, v2])
                .is_empty()
        );
    }

    #[test]
    fn levels_parse_in_confluent_spelling() {
        assert_eq!(
            CompatibilityLevel::parse("full_transitive"),
            Some(CompatibilityLevel::FullTransitive)
        );
        assert_eq!(
            CompatibilityLevel::parse("BACKWARD"),
            Some(CompatibilityLevel::Backward)
        );
        assert_eq!(CompatibilityLevel::parse("SIDEWAYS"), None);
        assert_eq!(
            CompatibilityLevel::FullTransitive.as_str(),
            "FULL_TRANSITIVE"
        );
    }
}
