//! What kind each metric family is (counter, gauge, histogram, ...), learnt from the
//! metadata clients send, so series can carry their kind even when their samples and the
//! metadata arrive in different requests (as Prometheus remote write sends them).

use std::collections::HashMap;
use std::sync::Mutex;

/// Family kinds per tenant, as last announced.
#[derive(Default)]
pub struct Families {
    kinds: Mutex<HashMap<(String, String), String>>,
}

/// Suffixes Prometheus adds to a family name for its series.
pub const SUFFIXES: &[&str] = &["_bucket", "_count", "_sum", "_total", "_created", "_info"];

impl Families {
    /// Records the kind of `family` for `tenant`.
    pub fn learn(&self, tenant: &str, family: &str, kind: &str) {
        let mut kinds = self.kinds.lock().expect("families lock");
        kinds.insert((tenant.to_string(), family.to_string()), kind.to_string());
    }

    /// The kind of the family a series named `name` belongs to, or `unknown`.
    pub fn kind_of(&self, tenant: &str, name: &str) -> String {
        let kinds = self.kinds.lock().expect("families lock");
        let lookup = |n: &str| kinds.get(&(tenant.to_string(), n.to_string())).cloned();
        if let Some(k) = lookup(name) {
            return k;
        }
        SUFFIXES
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find_map(lookup)
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_find_their_family_through_suffixes() {
        let f = Families::default();
        f.learn("t", "http_request_duration_seconds", "histogram");
        f.learn("t", "up", "gauge");
        assert_eq!(
            f.kind_of("t", "http_request_duration_seconds_bucket"),
            "histogram"
        );
        assert_eq!(f.kind_of("t", "up"), "gauge");
        assert_eq!(f.kind_of("other", "up"), "unknown");
        assert_eq!(f.kind_of("t", "nothing_total"), "unknown");
    }
}
