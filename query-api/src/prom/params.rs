//! Prometheus API parameters from the query string and, for POST, the form body (repeated
//! keys such as `match[]` kept in order).

use axum::http::HeaderMap;

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Reads the URL query and a form body.
    pub fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut out: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let form = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            out.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(out)
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A time parameter in ms: RFC 3339 or (fractional) seconds since the epoch.
    pub fn time_ms(&self, key: &str) -> Result<Option<i64>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Ok(secs) = v.parse::<f64>() {
            return Ok(Some((secs * 1000.0).round() as i64));
        }
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| {
                format!("invalid parameter \"{key}\": cannot parse {v:?} to a valid timestamp")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_times() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::read(
            Some("match%5B%5D=up&start=1700000000.5"),
            &h,
            b"match[]=go_info&end=2026-11-22T10:00:00Z",
        );
        assert_eq!(p.all("match[]"), ["up", "go_info"]);
        assert_eq!(p.time_ms("start").unwrap(), Some(1_700_000_000_500));
        assert_eq!(p.time_ms("end").unwrap(), Some(1_795_341_600_000));
        assert!(
            Params::read(Some("start=yesterday"), &HeaderMap::new(), b"")
                .time_ms("start")
                .is_err()
        );
    }
}
