//! Stable hashes that identify a metric series or a log stream across every stage.
//!
//! The hash is xxh3-64 over a length-prefixed encoding, so `{a="bc"}` and `{ab="c"}` never
//! collide by construction, and it is independent of label order. It must never change:
//! it is a Kafka key and a ClickHouse sort-key column.

use xxhash_rust::xxh3::Xxh3;

fn feed(h: &mut Xxh3, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// Fingerprint of a metric series: tenant, metric name and labels (any order).
pub fn series_fingerprint<'a>(
    tenant: &str,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> i64 {
    let mut sorted: Vec<(&str, &str)> = labels.into_iter().collect();
    sorted.sort_unstable();
    let mut h = Xxh3::new();
    feed(&mut h, tenant);
    feed(&mut h, "__name__");
    feed(&mut h, name);
    for (k, v) in sorted {
        feed(&mut h, k);
        feed(&mut h, v);
    }
    h.digest() as i64
}

/// Fingerprint of a log stream: tenant, service and the stream's labels (any order).
pub fn stream_fingerprint<'a>(
    tenant: &str,
    service: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> i64 {
    series_fingerprint(tenant, service, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_order_does_not_matter() {
        let a = series_fingerprint("t", "up", [("job", "a"), ("instance", "b")]);
        let b = series_fingerprint("t", "up", [("instance", "b"), ("job", "a")]);
        assert_eq!(a, b);
    }

    #[test]
    fn boundaries_and_tenants_are_distinct() {
        let a = series_fingerprint("t", "m", [("a", "bc")]);
        let b = series_fingerprint("t", "m", [("ab", "c")]);
        assert_ne!(a, b);
        assert_ne!(
            series_fingerprint("t1", "m", [("a", "b")]),
            series_fingerprint("t2", "m", [("a", "b")])
        );
    }

    #[test]
    fn value_is_stable_across_releases() {
        // A Kafka key and a stored column: these numbers must never change.
        assert_eq!(
            series_fingerprint("default", "up", [("job", "node")]),
            -8_747_975_998_863_892_005
        );
        assert_eq!(series_fingerprint("", "", []), 2_670_716_890_753_539_624);
    }
}
