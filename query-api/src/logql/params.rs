//! Loki API parameters: times (ns, seconds with a fraction, or RFC 3339), steps (seconds or
//! a duration), `limit` and `direction`.

use super::lexer::parse_duration;

/// A time as Loki reads it: with a `.` as float seconds; an integer of up to 10 digits as
/// seconds, longer as ns; else RFC 3339.
pub fn time_ns(name: &str, v: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "invalid {name} parameter {v:?}: expected ns or seconds since the epoch, or RFC 3339"
        )
    };
    if v.contains('.')
        && let Ok(secs) = v.parse::<f64>()
    {
        let whole = secs.trunc();
        let ms = ((secs - whole) * 1000.0).round();
        return Ok(whole as i64 * 1_000_000_000 + ms as i64 * 1_000_000);
    }
    if let Ok(n) = v.parse::<i64>() {
        return Ok(if v.trim_start_matches('-').len() <= 10 {
            n * 1_000_000_000
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(bad)
}

/// A step: float seconds or a duration (`30s`, `1m`), in ns; must be positive.
pub fn step_ns(v: &str) -> Result<i64, String> {
    let ns = match v.parse::<f64>() {
        Ok(secs) => (secs * 1e9).round() as i64,
        Err(_) => parse_duration(v).ok_or_else(|| {
            format!("invalid step parameter {v:?}: expected seconds or a duration such as 30s")
        })?,
    };
    if ns <= 0 {
        return Err("zero or negative query resolution step widths are not accepted. Try a positive integer".into());
    }
    Ok(ns)
}

/// `limit`: a positive integer (default 100).
pub fn limit(v: Option<&str>) -> Result<u64, String> {
    match v {
        None | Some("") => Ok(100),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "invalid limit parameter {s:?}: limit must be a positive value"
            )),
        },
    }
}

/// `direction`: `backward` (default, newest first) or `forward`; true for backward.
pub fn backward(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("backward") => Ok(true),
        Some("forward") => Ok(false),
        Some(other) => Err(format!(
            "invalid direction parameter {other:?}: expected forward or backward"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_loki_reads_them() {
        assert_eq!(
            time_ns("start", "1700000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            time_ns("start", "1700000000.25"),
            Ok(1_700_000_000_250_000_000)
        );
        assert_eq!(
            time_ns("start", "1700000000000000007"),
            Ok(1_700_000_000_000_000_007)
        );
        assert_eq!(
            time_ns("start", "2026-11-22T10:00:00.5Z"),
            Ok(1_795_341_600_500_000_000)
        );
        assert!(time_ns("start", "yesterday").unwrap_err().contains("start"));
        assert_eq!(step_ns("15"), Ok(15_000_000_000));
        assert_eq!(step_ns("1m"), Ok(60_000_000_000));
        assert_eq!(step_ns("0.5"), Ok(500_000_000));
        assert!(step_ns("0").is_err());
        assert_eq!(limit(None), Ok(100));
        assert!(limit(Some("-1")).is_err());
        assert_eq!(backward(Some("FORWARD")), Ok(false));
        assert!(backward(Some("up")).is_err());
    }
}
