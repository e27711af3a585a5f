//! The benchmark's report: medians of the runs (with their range), the targets of
//! DESIGN.md §8 against them, where the CPU went, the engine's own rate as the floor,
//! peak memory, and the change against the last report in the same directory. Written as
//! `<dir>/<date>-ingest.md` beside a JSON of the medians that the next report compares to.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BenchOptions;
use super::drive::{Measured, percentile};
use super::probe::Seen;

/// One workload's figures in one run.
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkloadFigures {
    /// What was sent where.
    pub name: String,
    /// The table its records end in (none for the peer).
    pub table: Option<String>,
    /// Records acknowledged per second.
    pub acked_per_s: f64,
    /// Records acknowledged.
    pub records: u64,
    /// Request latency, median and 99th percentile, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Request bytes per acknowledged record.
    pub request_bytes_per_record: f64,
    /// Requests refused or unanswered.
    pub failures: u64,
    /// Records per second from the workload's start until the last one was stored.
    pub stored_per_s: Option<f64>,
    /// Records stored (equal to `records` unless the wait gave up).
    pub stored: Option<u64>,
    /// Ingest → queryable latency of the probes, median and 99th percentile, ms.
    pub queryable_p50_ms: Option<f64>,
    /// See `queryable_p50_ms`.
    pub queryable_p99_ms: Option<f64>,
    /// Probes seen, and probes acknowledged but never seen.
    pub probes: (usize, usize),
    /// CPU seconds per million records, by process role.
    pub cpu_per_million: BTreeMap<String, f64>,
}

impl WorkloadFigures {
    /// The figures of a workload from its measurements.
    pub fn new(
        name: &str,
        table: Option<&str>,
        m: &Measured,
        stored: Option<(u64, Duration)>,
        seen: Option<Seen>,
        cpu: BTreeMap<String, f64>,
    ) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let million = m.records as f64 / 1e6;
        WorkloadFigures {
            name: name.into(),
            table: table.map(str::to_string),
            acked_per_s: m.per_second(),
            records: m.records,
            p50_ms: ms(m.percentile(0.5)),
            p99_ms: ms(m.percentile(0.99)),
            request_bytes_per_record: m.bytes as f64 / m.records.max(1) as f64,
            failures: m.failures,
            stored_per_s: stored.map(|(n, d)| n as f64 / d.as_secs_f64()),
            stored: stored.map(|(n, _)| n),
            queryable_p50_ms: seen.as_ref().map(|s| ms(percentile(&s.latencies, 0.5))),
            queryable_p99_ms: seen.as_ref().map(|s| ms(percentile(&s.latencies, 0.99))),
            probes: seen
                .map(|s| (s.latencies.len(), s.unseen))
                .unwrap_or_default(),
            // Nothing acknowledged: no cost per record to speak of.
            cpu_per_million: if m.records == 0 {
                BTreeMap::new()
            } else {
                cpu.into_iter().map(|(k, v)| (k, v / million)).collect()
            },
        }
    }
}

/// Every workload of one run, in order.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RunFigures {
    /// In the order they ran.
    pub workloads: Vec<WorkloadFigures>,
}

/// What the next report compares itself to: the medians and where they came from.
#[derive(Serialize, Deserialize)]
struct Summary {
    written_at: String,
    commit: String,
    report: String,
    /// Workload name → (acknowledged/s, stored/s, queryable p99 ms).
    medians: BTreeMap<String, (f64, Option<f64>, Option<f64>)>,
}

/// A whole benchmark's results.
pub struct Report {
    date: chrono::DateTime<chrono::Utc>,
    commit: String,
    machine: String,
    setup: String,
    options: String,
    runs: Vec<RunFigures>,
    stored_bytes: BTreeMap<String, f64>,
    floors: BTreeMap<String, (u64, f64)>,
    rss: BTreeMap<String, u64>,
    previous: Option<Summary>,
    /// How often the probes asked the query API (ms).
    probe_poll_ms: u128,
}

/// Median and range of `values` (all zero when empty).
fn spread(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// `median (min–max)` with `digits` decimals, or the median alone for one run.
fn shown(values: &[f64], digits: usize) -> String {
    let (m, lo, hi) = spread(values);
    if values.len() < 2 {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    }
}

/// One run's CPU seconds per million records of each role, then their total: `a / b / total`.
fn cpu_cells(roles: &[String], cpu: &BTreeMap<String, f64>) -> String {
    let mut cells: Vec<String> = roles
        .iter()
        .map(|r| cpu.get(r).map_or_else(|| "—".into(), |v| format!("{v:.2}")))
        .collect();
    cells.push(format!("{:.2}", cpu.values().sum::<f64>()));
    cells.join(" / ")
}

/// Thousands as `k`, millions as `M`, for rates.
fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn shown_rate(values: &[f64]) -> String {
    let (m, lo, hi) = spread(values);
    if values.len() < 2 {
        rate(m)
    } else {
        format!("{} ({}–{})", rate(m), rate(lo), rate(hi))
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb / 1024.0 / 1024.0)
        })
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

impl Report {
    /// Gathers what the runs measured and what identifies them.
    pub fn new(
        opts: &BenchOptions,
        runs: Vec<RunFigures>,
        stored_bytes: BTreeMap<String, f64>,
        floors: BTreeMap<String, (u64, f64)>,
        rss: BTreeMap<String, u64>,
    ) -> Self {
        let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        let previous = opts.report.as_deref().and_then(latest_summary);
        Report {
            date: chrono::Utc::now(),
            commit: if dirty {
                format!("{commit} with uncommitted changes")
            } else {
                commit
            },
            machine: machine(),
            setup: opts.setup.clone(),
            options: format!(
                "{} runs; per workload {} s from {} concurrent senders; remote write {} series × {} samples ({} ms apart) per request{}, OTLP {} logs or {} spans per request",
                opts.runs,
                opts.seconds,
                opts.concurrency,
                super::workloads::RW_SERIES,
                super::workloads::RW_SAMPLES,
                super::workloads::RW_STEP_MS,
                if opts.paced_rate > 0 {
                    format!(
                        " (the paced workload: {} samples/s, requests spread evenly)",
                        rate(opts.paced_rate as f64)
                    )
                } else {
                    String::new()
                },
                super::workloads::LOGS_PER_REQUEST,
                super::workloads::SPANS_PER_REQUEST
            ),
            runs,
            stored_bytes,
            floors,
            rss,
            previous,
            probe_poll_ms: opts.probe_poll.as_millis(),
        }
    }

    /// A field of workload `i` across the runs.
    fn across(&self, i: usize, f: impl Fn(&WorkloadFigures) -> Option<f64>) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.workloads.get(i).and_then(&f))
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.runs
            .first()
            .map(|r| r.workloads.iter().map(|w| w.name.clone()).collect())
            .unwrap_or_default()
    }

    fn index(&self, prefix: &str) -> Option<usize> {
        self.names().iter().position(|n| n.starts_with(prefix))
    }

    fn median(&self, i: usize, f: impl Fn(&WorkloadFigures) -> Option<f64>) -> Option<f64> {
        let v = self.across(i, f);
        (!v.is_empty()).then(|| spread(&v).0)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let names = self.names();
        let _ = writeln!(
            md,
            "# Ingest benchmark, {}\n",
            self.date.format("%Y-%m-%d %H:%M UTC")
        );
        let _ = writeln!(md, "- commit: {}", self.commit);
        let _ = writeln!(md, "- machine: {}", self.machine);
        let _ = writeln!(md, "- stack: {}", self.setup);
        let _ = writeln!(md, "- load: {}", self.options);
        let _ = writeln!(
            md,
            "- each workload runs alone; the next starts once ClickHouse holds every record the last one had acknowledged\n"
        );

        let _ = writeln!(md, "## Results (median of the runs, range in brackets)\n");
        let _ = writeln!(
            md,
            "| workload | acknowledged/s | stored/s (start → last row in ClickHouse) | request p50 / p99 ms | request bytes/record | ingest → queryable p50 / p99 ms | failed requests |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (i, name) in names.iter().enumerate() {
            let stored = self.across(i, |w| w.stored_per_s);
            let q50 = self.across(i, |w| w.queryable_p50_ms);
            let q99 = self.across(i, |w| w.queryable_p99_ms);
            let unseen: usize = self
                .runs
                .iter()
                .filter_map(|r| r.workloads.get(i))
                .map(|w| w.probes.1)
                .sum();
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} / {} | {} | {} | {} |",
                shown_rate(&self.across(i, |w| Some(w.acked_per_s))),
                if stored.is_empty() {
                    "—".into()
                } else {
                    shown_rate(&stored)
                },
                shown(&self.across(i, |w| Some(w.p50_ms)), 1),
                shown(&self.across(i, |w| Some(w.p99_ms)), 1),
                shown(&self.across(i, |w| Some(w.request_bytes_per_record)), 2),
                if q50.is_empty() {
                    "—".into()
                } else {
                    format!(
                        "{} / {}{}",
                        shown(&q50, 0),
                        shown(&q99, 0),
                        if unseen > 0 {
                            format!(" ({unseen} probes never seen)")
                        } else {
                            String::new()
                        }
                    )
                },
                self.runs
                    .iter()
                    .filter_map(|r| r.workloads.get(i))
                    .map(|w| w.failures)
                    .sum::<u64>(),
            );
        }
        let _ = writeln!(
            md,
            "\nIngest → queryable: a probe sample is sent by remote write every {} ms while the workload runs; the time from sending it until the query API returns it (polled every {} ms; the collector's answer time included). Where the collectors acknowledge faster than the sinks store, Kafka holds the difference and the probes wait behind it: their latency is then the backlog's, not the pipeline's at a rate it sustains.\n",
            super::probe::EVERY.as_millis(),
            self.probe_poll_ms
        );

        self.targets(&mut md);
        self.cpu(&mut md, &names);
        self.floor(&mut md);

        let _ = writeln!(md, "## Peak memory (resident, whole benchmark)\n");
        let _ = writeln!(md, "| process | peak RSS |\n|---|---|");
        for (role, bytes) in &self.rss {
            let _ = writeln!(
                md,
                "| {role} | {:.0} MiB |",
                *bytes as f64 / (1 << 20) as f64
            );
        }
        let _ = writeln!(md);

        if let Some(prev) = &self.previous {
            let _ = writeln!(
                md,
                "## Against the last report ({}, commit {})\n",
                prev.report, prev.commit
            );
            let _ = writeln!(
                md,
                "| workload | acknowledged/s then → now | stored/s then → now |\n|---|---|---|"
            );
            for (i, name) in names.iter().enumerate() {
                let Some((acked, stored, _)) = prev.medians.get(name) else {
                    continue;
                };
                let now_acked = self.median(i, |w| Some(w.acked_per_s)).unwrap_or(0.0);
                let now_stored = self.median(i, |w| w.stored_per_s);
                let _ = writeln!(
                    md,
                    "| {name} | {} → {} ({:+.0}%) | {} |",
                    rate(*acked),
                    rate(now_acked),
                    (now_acked / acked.max(1.0) - 1.0) * 100.0,
                    match (stored, now_stored) {
                        (Some(a), Some(b)) => format!(
                            "{} → {} ({:+.0}%)",
                            rate(*a),
                            rate(b),
                            (b / a.max(1.0) - 1.0) * 100.0
                        ),
                        _ => "—".into(),
                    }
                );
            }
            let _ = writeln!(md);
        }

        let _ = writeln!(md, "## Every run\n");
        // Per run too: a drift from run to run (state that grows) shows only here.
        let roles = self.roles();
        let _ = writeln!(
            md,
            "| run | workload | acknowledged/s | stored/s | queryable p99 ms | CPU s per million: {} / total |\n|---|---|---|---|---|---|",
            roles.join(" / ")
        );
        for (r, run) in self.runs.iter().enumerate() {
            for w in &run.workloads {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    r + 1,
                    w.name,
                    rate(w.acked_per_s),
                    w.stored_per_s.map(rate).unwrap_or_else(|| "—".into()),
                    w.queryable_p99_ms
                        .map(|p| format!("{p:.0}"))
                        .unwrap_or_else(|| "—".into()),
                    cpu_cells(&roles, &w.cpu_per_million)
                );
            }
        }
        md
    }

    fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Against the targets (DESIGN.md §8)\n");
        let _ = writeln!(md, "| target | measured (median) | met |\n|---|---|---|");
        let mut row = |target: &str, measured: String, met: Option<bool>| {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(md, "| {target} | {measured} | {met} |");
        };
        let rw = self.index("remote write → obs");
        let peer = self.index("remote write → Prometheus");
        let stored = |i: Option<usize>| i.and_then(|i| self.median(i, |w| w.stored_per_s));
        let acked = |i: Option<usize>| i.and_then(|i| self.median(i, |w| Some(w.acked_per_s)));
        if let Some(s) = stored(rw) {
            row(
                "samples stored ≥ 300k/s",
                format!("{}/s", rate(s)),
                Some(s >= 300e3),
            );
        }
        if let (Some(s), Some(a), Some(p)) =
            (stored(rw), acked(rw), acked(peer).filter(|p| *p > 0.0))
        {
            row(
                "samples ≥ 1.0× Prometheus 2.42's remote-write ingest",
                format!(
                    "stored {:.2}×, acknowledged {:.2}× (Prometheus {}/s)",
                    s / p,
                    a / p,
                    rate(p)
                ),
                Some(s >= p),
            );
        }
        for (prefix, what) in [
            ("OTLP/HTTP logs", "logs stored ≥ 100k/s"),
            ("OTLP/HTTP spans", "spans stored ≥ 100k/s"),
        ] {
            if let Some(s) = stored(self.index(prefix)) {
                row(what, format!("{}/s", rate(s)), Some(s >= 100e3));
            }
        }
        if let Some(b) = self.stored_bytes.get("metrics_samples") {
            row(
                "≤ 1.5 bytes per stored sample",
                format!("{b:.2} (after OPTIMIZE FINAL; synthetic values)"),
                Some(*b <= 1.5),
            );
        }
        // With a paced workload, the unpaced remote write's probes measure its backlog (the
        // collector acknowledges faster than the sinks store), not a sustained rate.
        let paced = self.index("paced remote write");
        let p99 = (0..self.names().len())
            .filter(|&i| paced.is_none() || Some(i) != rw)
            .filter_map(|i| self.median(i, |w| w.queryable_p99_ms))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        if let Some(p) = p99 {
            let backlog = match (
                paced,
                rw.and_then(|i| self.median(i, |w| w.queryable_p99_ms)),
            ) {
                (Some(_), Some(b)) => format!(
                    "; behind the unpaced remote write's backlog {:.2} s",
                    b / 1e3
                ),
                _ => String::new(),
            };
            row(
                "p99 ingest → queryable ≤ 5 s",
                format!(
                    "{:.2} s (worst workload{}){backlog}",
                    p / 1e3,
                    if paced.is_some() {
                        " at a sustained rate: paced remote write, logs, spans"
                    } else {
                        ""
                    }
                ),
                Some(p <= 5000.0),
            );
        }
        row(
            "PromQL range queries ≤ 1.0× Prometheus",
            "measured by `scripts/stack bench-query`, not here".into(),
            None,
        );
        let _ = writeln!(md);
    }

    /// The processes whose CPU the runs measured, in name order.
    fn roles(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| {
                r.workloads
                    .iter()
                    .flat_map(|w| w.cpu_per_million.keys().cloned())
            })
            .collect();
        r.sort();
        r.dedup();
        r
    }

    fn cpu(&self, md: &mut String, names: &[String]) {
        let roles = self.roles();
        if roles.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Where the CPU goes (CPU seconds per million records, median)\n"
        );
        let _ = writeln!(
            md,
            "Per process, from the workload's start until its last record is stored and the engine has finished merging (user + system time from /proc; the merges of a workload's parts are its cost, and no longer run into the next workload's figures).\n"
        );
        let _ = writeln!(md, "| workload | {} | total |", roles.join(" | "));
        let _ = writeln!(md, "|---|{}---|", "---|".repeat(roles.len()));
        for (i, name) in names.iter().enumerate() {
            let mut cells = Vec::new();
            let mut total = 0.0;
            for role in &roles {
                let v = self
                    .median(i, |w| w.cpu_per_million.get(role).copied())
                    .unwrap_or(0.0);
                total += v;
                cells.push(format!("{v:.2}"));
            }
            let _ = writeln!(md, "| {name} | {} | {total:.2} |", cells.join(" | "));
        }
        let _ = writeln!(md);
    }

    fn floor(&self, md: &mut String) {
        if self.floors.is_empty() {
            return;
        }
        let _ = writeln!(md, "## The engine's floor\n");
        let _ = writeln!(
            md,
            "The same rows copied by the engine itself (one `INSERT … SELECT` into an empty table of the same definition, through the same HTTP endpoint, reading them back included) against the pipeline's stored rate.\n"
        );
        let _ = writeln!(
            md,
            "| table | rows | engine rows/s | pipeline stored rows/s | pipeline ÷ engine |\n|---|---|---|---|---|"
        );
        for (table, (rows, secs)) in &self.floors {
            let engine = *rows as f64 / secs.max(1e-9);
            let i = (0..self.names().len()).find(|&i| {
                self.runs
                    .first()
                    .and_then(|r| r.workloads.get(i))
                    .is_some_and(|w| w.table.as_ref() == Some(table))
            });
            let pipeline = i.and_then(|i| self.median(i, |w| w.stored_per_s));
            let _ = writeln!(
                md,
                "| {table} | {rows} | {} | {} | {} |",
                rate(engine),
                pipeline.map(rate).unwrap_or_else(|| "—".into()),
                pipeline
                    .map(|p| format!("{:.2}", p / engine))
                    .unwrap_or_else(|| "—".into())
            );
        }
        let _ = writeln!(md);
    }

    /// Writes `<dir>/<date>-ingest.md` (`-2`, `-3`... if taken) and its JSON; the path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let day = self.date.format("%Y-%m-%d").to_string();
        let mut stem = format!("{day}-ingest");
        let mut n = 1;
        while dir.join(format!("{stem}.md")).exists() {
            n += 1;
            stem = format!("{day}-ingest-{n}");
        }
        let md_path = dir.join(format!("{stem}.md"));
        std::fs::write(&md_path, self.markdown())?;
        let medians = self
            .names()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    (
                        self.median(i, |w| Some(w.acked_per_s)).unwrap_or(0.0),
                        self.median(i, |w| w.stored_per_s),
                        self.median(i, |w| w.queryable_p99_ms),
                    ),
                )
            })
            .collect();
        let summary = Summary {
            written_at: self.date.to_rfc3339(),
            commit: self.commit.clone(),
            report: format!("{stem}.md"),
            medians,
        };
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_vec_pretty(&summary)?,
        )?;
        Ok(md_path)
    }
}

/// The most recently written summary in `dir`, if any.
fn latest_summary(dir: &Path) -> Option<Summary> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "json").then_some(p)
        })
        .filter_map(|p| serde_json::from_slice::<Summary>(&std::fs::read(p).ok()?).ok())
        .max_by(|a, b| a.written_at.cmp(&b.written_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_s_cpu_is_listed_per_role_then_totalled() {
        let roles = vec!["broker".to_string(), "engine".into(), "obs".into()];
        let cpu: BTreeMap<String, f64> = [("broker".to_string(), 1.5), ("obs".into(), 2.25)].into();
        assert_eq!(cpu_cells(&roles, &cpu), "1.50 / — / 2.25 / 3.75");
    }

    #[test]
    fn medians_and_ranges_of_odd_and_even_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(shown(&[1.0, 2.0, 9.0], 1), "2.0 (1.0–9.0)");
        assert_eq!(shown_rate(&[150e3, 2.5e6]), "1.32M (150.0k–2.50M)");
    }
}
