//! `obs replay`: the command-line side of [`obs_sinks::replay`] (argument parsing, the
//! summary table).

use std::time::Duration;

use anyhow::{Context, bail};
use obs_runtime::Config;
use obs_schemas::Topic;
use obs_sinks::replay::{ReplayOptions, replay};

/// Parses a time: `now`, `-<duration>` before now (`-2h`, `-30m`), seconds since the epoch,
/// or RFC 3339 (`2026-11-22T10:00:00Z`). Returns ns since the epoch.
pub fn parse_time(s: &str, now_ns: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ns);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago)
            .with_context(|| format!("{s:?} is not a duration before now (e.g. -2h, -30m)"))?;
        return Ok(now_ns - d.as_nanos() as i64);
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        let secs: i64 = s.parse().context("seconds since the epoch")?;
        return Ok(secs * 1_000_000_000);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .with_context(|| {
            format!("{s:?} is not a time: use now, -2h, seconds since the epoch or RFC 3339")
        })
}

/// Runs a replay and prints its summary.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: &Config,
    topic: &str,
    from: &str,
    to: &str,
    into: Option<String>,
    database: Option<String>,
    slack: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let opts = ReplayOptions {
        topic: Topic::parse(topic)?,
        from_ns: parse_time(from, now)?,
        to_ns: parse_time(to, now)?,
        into,
        database,
        slack: humantime::parse_duration(slack)
            .with_context(|| format!("--slack {slack:?} is not a duration (e.g. 5m)"))?,
        progress: !quiet,
    };
    if opts.slack > Duration::from_secs(24 * 3600) {
        bail!("--slack is more than a day; give the range itself instead");
    }
    let started = std::time::Instant::now();
    let summaries = replay(cfg, &opts).await?;
    let mut table = comfy_table::Table::new();
    table.set_header([
        "table",
        "messages read",
        "rows stored",
        "already stored",
        "outside range",
        "undecodable",
        "left to the live sink",
    ]);
    for s in &summaries {
        table.add_row([
            s.target.clone(),
            s.messages.to_string(),
            s.stored.to_string(),
            s.already_stored.to_string(),
            s.outside_range.to_string(),
            s.undecodable.to_string(),
            s.left_to_sink.to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "replayed {} in {:.1} s",
        opts.topic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let now = 1_000_000 * 1_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-1h", now).unwrap(), now - 3_600_000_000_000);
        assert_eq!(
            parse_time("1700000000", now).unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("2026-11-22T10:00:00Z", now).unwrap(),
            1_795_341_600_000_000_000
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn topics_by_full_or_short_name() {
        assert_eq!(Topic::parse("obs.logs").unwrap(), Topic::Logs);
        assert_eq!(Topic::parse("metrics").unwrap(), Topic::Metrics);
        assert!(Topic::parse("nope").is_err());
    }
}
