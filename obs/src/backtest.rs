//! `obs rules backtest`: the command-line side of
//! [`obs_stream_processors::rules::backtest`] (arguments, the timeline report).

use anyhow::Context;
use obs_runtime::Config;
use obs_stream_processors::rules::backtest::{self, Options, Report};

use crate::replay::parse_time;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn duration_ms(s: &str) -> anyhow::Result<i64> {
    obs_stream_processors::rules::file::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| anyhow::anyhow!("--for {s:?}: {e}"))
}

fn print_text(r: &Report) {
    println!(
        "Backtest {} .. {}: {} messages, {} group evaluations",
        rfc3339(r.from_ms),
        rfc3339(r.to_ms),
        r.messages,
        r.evaluations
    );
    for run in &r.runs {
        match run.for_ms {
            None => println!("\nfor as written in the rules:"),
            Some(f) => println!("\nfor = {}s on every alerting rule:", f / 1000),
        }
        if run.alerts.is_empty() {
            println!("  no alert changed state");
        }
        for a in &run.alerts {
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            println!(
                "  [{}] {{{}}}: {} page{}",
                a.tenant,
                labels.join(", "),
                a.pages,
                if a.pages == 1 { "" } else { "s" }
            );
            for s in &a.steps {
                println!("    {}  {:<9} {}", rfc3339(s.at_ms), s.state, s.value);
            }
        }
        println!("  pages in total: {}", run.pages);
    }
}

/// Runs a backtest and prints its report.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: &Config,
    files: Vec<String>,
    from: &str,
    to: &str,
    for_values: &[String],
    slack: &str,
    format: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        format == "text" || format == "json",
        "--format {format:?}: use text or json"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let from_ms = parse_time(from, now)? / 1_000_000;
    let to_ms = parse_time(to, now)? / 1_000_000;
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    let opts = Options {
        files,
        from_ms,
        to_ms,
        for_values: for_values
            .iter()
            .map(|s| duration_ms(s))
            .collect::<anyhow::Result<_>>()?,
        slack_ms: humantime::parse_duration(slack)
            .with_context(|| format!("--slack {slack:?} is not a duration"))?
            .as_millis() as i64,
        progress: !quiet,
    };
    let report = backtest::run(cfg, &opts).await?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}
