//! `obs`: the one command of the observability pipeline. Each subcommand runs one stage (or
//! all of them), applies migrations, or talks to a running pipeline.

mod backtest;
mod bench;
mod demo;
mod demo_traces;
mod errors;
mod explain;
mod huge_pages;
mod query_api;
mod replay;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use obs_runtime::auth::{Access, Dialect};
use obs_runtime::{Config, clickhouse as ch, ops, shutdown, telemetry};
use obs_schemas::migrations;
use obs_schemas::registry::{SchemaStore, router as registry_router};

/// An observability pipeline around Kafka: collectors publish metrics, logs, spans and
/// events to Kafka as Avro; the rule processor evaluates Prometheus rules on them and
/// alerts through Alertmanager; the trace processor correlates spans per trace (span
/// metrics, service graph, tail sampling); log pipelines parse and redact logs; rollups
/// and streaming SQL queries aggregate in event-time windows; sinks store them in
/// ClickHouse; the query API serves them.
///
/// Configuration: defaults, then the TOML file given by --config (or OBS_CONFIG), then
/// OBS_* environment variables (OBS_KAFKA__BROKERS sets [kafka] brokers). See
/// `obs config` for the merged result and config/obs.example.toml for every key.
#[derive(Parser)]
#[command(name = "obs", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OBS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage in one process: registry, migrations, collector, sink, query API,
    /// stream processors (rules, traces).
    /// Kafka and ClickHouse must be reachable (scripts/stack up starts local ones).
    Up {
        /// Leave the sink out (run it on its own with `obs sink`).
        #[arg(long)]
        no_sink: bool,
        /// Leave the stream processors out (run them on their own with `obs processor`).
        #[arg(long)]
        no_processor: bool,
    },
    /// Run the collectors: OTLP over HTTP (4318) and gRPC (4317), Prometheus remote write,
    /// Loki push, Zipkin (9411), JSON events, and scraping/probes from [collector]
    /// scrape_config.
    Collector,
    /// Run the sinks (Kafka → ClickHouse, exactly once). Each table's offsets live in the
    /// consumer group <[sink] group_prefix>-<table>; this instance reads the partitions
    /// p % [sink] instances == [sink] instance. /readyz turns 503 when a partition stalls.
    Sink,
    /// Run the query API: the Prometheus HTTP API (PromQL query/query_range, labels, series,
    /// metadata), the Loki HTTP API (LogQL), the Jaeger and Tempo trace APIs,
    /// /api/v1/explain and tenant-scoped read-only SQL (/api/v1/sql).
    Query,
    /// Run the schema registry (Confluent REST API) on [registry] listen.
    Registry,
    /// Create the ClickHouse database and apply pending migrations (idempotent), and the
    /// table of each [sql] query.
    Migrate {
        /// Print the statements a migration of an empty database runs (for one server, or
        /// for [clickhouse] cluster) instead of running them; connects to nothing.
        #[arg(long)]
        print: bool,
    },
    /// Run the stream processors: the rule processor evaluates the Prometheus rule files of
    /// [processor] rule_files on obs.metrics in event time (recorded series and ALERTS back
    /// to obs.metrics, alert transitions to obs.alerts, alerts to [processor]
    /// alertmanagers); the trace processor ([traces]) correlates obs.spans per trace: Tempo's
    /// span metrics and service-graph metrics to obs.metrics, trace summaries to obs.traces,
    /// edges to obs.servicegraph, the traces tail sampling keeps to obs.spans.sampled; the
    /// log processor runs [logs] pipelines_file; the rollup processor ([rollups]) writes
    /// 1m/1h windows of every series to obs.metrics.rollup; the SQL processor runs the
    /// [sql] queries_file queries per event-time window into obs.sql.<query>;
    /// /metrics, /healthz, /readyz on [processor] listen.
    Processor,
    /// Prometheus rule files: `obs rules check FILE...` checks them as `promtool check
    /// rules` does (same files accepted, same refused, each problem named with file, group
    /// and rule); `obs rules test FILE...` runs promtool's rule unit-test files; `obs rules
    /// backtest` replays a time range through the rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Service level objectives: `obs slo generate SPEC` writes the rule file (SLI recording
    /// rules and multiwindow, multi-burn-rate alerts) for an SLO spec.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Re-read a topic's retained messages and store the records of a time range into the
    /// sink tables again: to fill a gap, or into fresh tables to rebuild after a schema
    /// change. Only records the target does not hold are stored (compared by content), so
    /// a range the live sink stored, replayed twice or overlapping, stores nothing twice;
    /// into the live tables it stops where the live sink has committed.
    Replay {
        /// Topic: obs.logs, obs.logs.raw, obs.spans, obs.metrics, obs.events or obs.alerts (or logs,
        /// spans, ...).
        #[arg(long)]
        topic: String,
        /// Start of the record-time range (inclusive): now, -2h, epoch seconds or RFC 3339.
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End of the record-time range (exclusive), same forms as --from.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// Store into this [database.]table (created like the topic's table if missing)
        /// instead of the topic's own table.
        #[arg(long)]
        into: Option<String>,
        /// Store into tables of this database (created if missing), named as the topic's
        /// tables.
        #[arg(long)]
        database: Option<String>,
        /// How far a message's produce time may be from its records' times.
        #[arg(long, default_value = "5m")]
        slack: String,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Measure the throughput of a running pipeline (collectors into the topics, sinks into
    /// ClickHouse), beside a Prometheus remote-write receiver if given. `scripts/stack bench`
    /// starts everything (release build) and runs this.
    Bench {
        /// Seconds per workload.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Concurrent senders per workload.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Samples per second of the paced remote-write workload, which measures ingest →
        /// queryable latency at a rate the pipeline sustains (DESIGN.md §8's 300k); 0
        /// leaves it out.
        #[arg(long, default_value_t = 300_000)]
        paced_rate: u64,
        /// Base URL of a Prometheus started with --web.enable-remote-write-receiver.
        #[arg(long)]
        peer_prometheus: Option<String>,
        /// How many times the whole set runs; the report gives medians and ranges.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory for the dated Markdown report (and the JSON the next report compares
        /// to), e.g. docs/benchmarks; without it the report is only printed.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// The stack's processes, as role=pid pairs separated by commas (e.g.
        /// obs=123,broker=456,engine=789): CPU seconds and peak memory are reported per role.
        #[arg(long, default_value = "")]
        pids: String,
        /// How the stack was set up (broker, engine, build), written into the report.
        #[arg(long, default_value = "")]
        setup: String,
        /// Only these workloads, comma-separated: rw, rw-peer, rw-paced, logs, spans (for
        /// profiling one of them); a partial set is printed, no report is written.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// How often the ingest → queryable probe asks the query API for its samples (ms).
        /// Each ask costs the engine ~18 ms of CPU (chDB): asked every 100 ms, the probe
        /// took ~10% of a core from the workload it measures (docs/PERFORMANCE.md,
        /// eleventh round). Latencies are over by up to one poll.
        #[arg(long, default_value_t = 250)]
        probe_poll_ms: u64,
    },
    /// Measure the rule engine on a rule file (ingest and evaluation rate, group evaluation
    /// time, memory) beside a Prometheus evaluating the same file on the same samples.
    /// `scripts/stack bench-rules` starts the Prometheus and runs this.
    BenchRules {
        /// Rule file.
        #[arg(long, default_value = "config/rules/bench.rules.yml")]
        rules: String,
        /// Counter series.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Minutes of history (15 s steps).
        #[arg(long, default_value_t = 30)]
        minutes: i64,
        /// Base URL of a Prometheus started with --web.enable-remote-write-receiver and the
        /// same rule file.
        #[arg(long)]
        peer_prometheus: Option<String>,
    },
    /// Log pipelines' speed: records/s through a pipelines file in process (5 stages with
    /// redaction by default); `scripts/stack bench-logs` adds the run through a stack.
    BenchLogs {
        /// The pipelines file.
        #[arg(long, default_value = "config/logs/bench.pipeline.toml")]
        pipelines: String,
        /// Records run through.
        #[arg(long, default_value_t = 200_000)]
        records: usize,
    },
    /// The rollup processor's speed: samples/s through one partition's 1m and 1h windows
    /// in process, and the size of its checkpoint.
    BenchRollups {
        /// Series in the partition.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Minutes of samples at 15 s.
        #[arg(long, default_value_t = 120)]
        minutes: usize,
    },
    /// The trace processor's speed and memory: spans/s through one partition's correlation
    /// (span metrics, assembly, tail sampling, service graph, summaries) in process, resident
    /// memory per open trace, and with --collector spans/s through a running pipeline until
    /// the processor has counted them.
    BenchTraces {
        /// Traces of 10 spans in the in-process run.
        #[arg(long, default_value_t = 200_000)]
        traces: usize,
        /// Tail-sampling policy file ("" keeps every trace).
        #[arg(long, default_value = "config/traces/sampling.example.yml")]
        policies: String,
        /// Collector base URL (OTLP/HTTP, e.g. http://127.0.0.1:4318) for the pipeline run.
        #[arg(long)]
        collector: Option<String>,
        /// Query API base URL for the pipeline run (default: http://<[query] listen>).
        #[arg(long)]
        query: Option<String>,
        /// Trace processor base URL for the pipeline run, whose /metrics counts the spans
        /// it handled (default: http://<[processor] listen>).
        #[arg(long)]
        processor: Option<String>,
        /// Traces sent in the pipeline run.
        #[arg(long, default_value_t = 20_000)]
        pipeline_traces: usize,
        /// Concurrent senders in the pipeline run.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Error groups (exceptions recorded on spans and in error logs, grouped by type,
    /// normalised message and innermost frames), newest last-seen first, from the query
    /// API's /api/v1/errors.
    Errors {
        /// Only this service's groups.
        #[arg(long)]
        service: Option<String>,
        /// How far back, as Prometheus writes durations (30m, 6h, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Most groups shown.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Output: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Query API base URL (default: http://<[query] listen>).
        #[arg(long)]
        url: Option<String>,
        /// Tenant (sent as X-Scope-OrgID; default: "default").
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Run read-only SQL through the query API and print the result.
    Sql {
        /// The statement, e.g. "SELECT ServiceName, count() FROM otel_logs GROUP BY 1".
        query: String,
        /// Output: table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// Query API base URL (default: http://<[query] listen>).
        #[arg(long)]
        url: Option<String>,
        /// Tenant whose rows the statement sees (sent as X-Scope-OrgID; default: "default").
        #[arg(long)]
        tenant: Option<String>,
        /// Run the statement with DataFusion over this topic's records (obs.logs, obs.spans,
        /// obs.events, obs.metrics, ...) read from the broker, as the table `records`,
        /// instead of over ClickHouse: e.g. --topic obs.logs --from -10m
        /// "SELECT service, count(*) FROM records GROUP BY service".
        #[arg(long)]
        topic: Option<String>,
        /// With --topic: start of the record-time range (inclusive): now, -10m, epoch
        /// seconds or RFC 3339.
        #[arg(
            long,
            requires = "topic",
            default_value = "-10m",
            allow_hyphen_values = true
        )]
        from: String,
        /// With --topic: end of the record-time range (exclusive), same forms as --from.
        #[arg(
            long,
            requires = "topic",
            default_value = "now",
            allow_hyphen_values = true
        )]
        to: String,
        /// With --topic: how far a message's produce time may be from its records' times.
        #[arg(long, requires = "topic", default_value = "5m")]
        slack: String,
    },
    /// Show the SQL a PromQL query (or LogQL with --logql) becomes, and what is evaluated in
    /// Rust over the rows it reads.
    Explain {
        /// The query, e.g. 'sum by (job) (rate(http_requests_total[5m]))'.
        query: String,
        /// The query is LogQL.
        #[arg(long)]
        logql: bool,
        /// Range start (Unix seconds or RFC 3339); with --end and --step, explains a range
        /// query, else an instant query now.
        #[arg(long, requires_all = ["end", "step"])]
        start: Option<String>,
        /// Range end.
        #[arg(long)]
        end: Option<String>,
        /// Range step (seconds or a duration such as 1m).
        #[arg(long)]
        step: Option<String>,
        /// Tenant (X-Scope-OrgID).
        #[arg(long)]
        tenant: Option<String>,
        /// Which rollups range functions may read: raw, auto, or a duration such as 1m or
        /// 1h (default: [query] max_source_resolution).
        #[arg(long)]
        max_source_resolution: Option<String>,
        /// Query API base URL (default: http://<[query] listen>).
        #[arg(long)]
        url: Option<String>,
    },
    /// Send demo data to the collector: a burst of logs over OTLP/HTTP and the last 10
    /// minutes of request counters by remote write (or, with --live, counters every 5 s).
    Demo {
        /// Number of log records.
        #[arg(long, default_value_t = 200)]
        records: usize,
        /// Tag every record with the attribute demo.run = this id, to count this burst
        /// (`SELECT count() FROM otel_logs WHERE LogAttributes['demo.run'] = '<id>'`).
        #[arg(long)]
        run_id: Option<String>,
        /// Collector base URL (default: http://<[collector] listen>).
        #[arg(long)]
        url: Option<String>,
        /// Instead of the burst, send the demo request counters every 5 s (current time)
        /// until stopped, as a running application would.
        #[arg(long)]
        live: bool,
    },
    /// Print the merged configuration as TOML.
    Config,
    /// Create the pipeline's Kafka topics that do not exist yet (as schemas/ names them;
    /// raw topics with [kafka] raw_partitions), waiting up to a minute for the broker, and
    /// print each with its partition count. The stages create them too; this is for
    /// brokers with automatic topic creation off (docker-compose's `topics` service).
    Topics,
    /// Make a credential for [auth]: a new random bearer token (printed once) and the
    /// [[auth.credentials]] entry holding only its SHA-256.
    Auth {
        /// The credential's name.
        #[arg(long)]
        name: String,
        /// Tenants it may act for (comma separated; "*" for any).
        #[arg(long, default_value = "default")]
        tenants: String,
        /// read, write or read,write.
        #[arg(long, default_value = "read")]
        access: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check rule files; exits 1 if any has a problem.
    Check {
        /// Rule files (YAML, as Prometheus's rule_files).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit-test files (the format of `promtool test rules`: input_series,
    /// alert_rule_test, promql_expr_test) through this project's rule engine; exits 1 if
    /// any test fails.
    Test {
        /// Unit-test files (YAML); their rule_files are read relative to each file.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay the retained obs.metrics history of a time range through the rule engine (at
    /// the processor's evaluation times, notifying nobody) and print each alert's
    /// pending/firing/resolved timeline and the pages it would have sent.
    Backtest {
        /// Rule files (paths or globs).
        #[arg(required = true)]
        files: Vec<String>,
        /// Start of the range: now, -2h, seconds since the epoch or RFC 3339.
        #[arg(long)]
        from: String,
        /// End of the range (inclusive), same forms as --from.
        #[arg(long, default_value = "now")]
        to: String,
        /// Also show the timelines with these `for` values for every alerting rule
        /// (comma separated, e.g. 5m,10m).
        #[arg(long = "for", value_delimiter = ',')]
        for_values: Vec<String>,
        /// How far a message's produce time may be from its samples' times.
        #[arg(long, default_value = "5m")]
        slack: String,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum SloCommand {
    /// Print the Prometheus rule file for an SLO spec (YAML: service, variant workbook or
    /// sloth, slos with name, objective in percent, period, error_query or good_query and
    /// total_query with {{.window}} where the range goes).
    Generate {
        /// The spec file.
        spec: PathBuf,
        /// Write the rule file here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// mimalloc instead of glibc's malloc: allocation and free were a third of `obs up`'s CPU
/// under span load (perf, `scripts/stack bench-traces`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    huge_pages::disable_unless_asked();
    telemetry::init();
    shutdown::listen();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    obs_runtime::tls::trust(&cfg.tls)?;
    query_api::set_client_token(&cfg.auth.client_token);
    match cli.command {
        Command::Up {
            no_sink,
            no_processor,
        } => up(cfg, !no_sink, !no_processor).await,
        Command::Collector => obs_producers::run(cfg, ops::Readiness::default()).await,
        Command::Sink => {
            migrate(&cfg).await?;
            let ready = ops::Readiness::default();
            let guard = ops::guard(&cfg, Dialect::Query, Some(Access::Read))?;
            let ops_server = ops::serve(
                &cfg.sink.listen,
                ops::router(ready.clone()),
                "sink ops",
                &guard,
            );
            let sink =
                async { tokio::try_join!(obs_sinks::run(cfg.clone(), ready, None), ops_server) };
            tokio::select! {
                r = sink => r.map(|_| ()),
                _ = async {
                    shutdown::wait().await;
                    tokio::time::sleep(SHUTDOWN_LIMIT).await;
                } => {
                    tracing::warn!("sinks still busy {SHUTDOWN_LIMIT:?} after the shutdown began; exiting (nothing unstored was committed)");
                    Ok(())
                }
            }
        }
        Command::Query => obs_query_api::run(cfg, ops::Readiness::default()).await,
        Command::Registry => registry(cfg, shutdown::wait()).await,
        Command::Migrate { print: false } => migrate(&cfg).await,
        Command::Migrate { print: true } => {
            let cluster = cfg.clickhouse.cluster_layout()?;
            let plan =
                migrations::plan(&cfg.clickhouse.database, &cfg.retention, cluster.as_ref())?;
            for stmt in plan {
                println!("{stmt};\n");
            }
            Ok(())
        }
        Command::Replay {
            topic,
            from,
            to,
            into,
            database,
            slack,
            quiet,
        } => {
            migrate(&cfg).await?;
            replay::run(&cfg, &topic, &from, &to, into, database, &slack, quiet).await
        }
        Command::Bench {
            seconds,
            concurrency,
            paced_rate,
            peer_prometheus,
            runs,
            report,
            pids,
            setup,
            only,
            probe_poll_ms,
        } => {
            let opts = bench::BenchOptions {
                seconds,
                concurrency: concurrency.max(1),
                paced_rate,
                peer_prometheus,
                runs: runs.max(1),
                report,
                pids: bench::parse_pids(&pids)?,
                setup,
                only,
                probe_poll: std::time::Duration::from_millis(probe_poll_ms.max(10)),
            };
            bench::run(&cfg, &opts).await
        }
        Command::BenchRules {
            rules,
            series,
            minutes,
            peer_prometheus,
        } => {
            let opts = bench::rules::RulesBench {
                rules,
                series,
                minutes,
                peer_prometheus,
            };
            bench::rules::run(&cfg, &opts).await
        }
        Command::Processor => {
            let ready = ops::Readiness::default();
            let view = obs_stream_processors::RulesView::default();
            let guard = ops::guard(&cfg, Dialect::Query, Some(Access::Read))?;
            let ops_server = ops::serve(
                &cfg.processor.listen,
                ops::router(ready.clone()).merge(view.routes()),
                "processor ops",
                &guard,
            );
            let processor = obs_stream_processors::run(cfg.clone(), ready, view, None);
            tokio::try_join!(processor, ops_server).map(|_| ())
        }
        Command::Rules {
            command: RulesCommand::Check { files },
        } => rules_check(&files),
        Command::Slo {
            command: SloCommand::Generate { spec, output },
        } => slo_generate(&spec, output.as_deref()),
        Command::Rules {
            command: RulesCommand::Test { files },
        } => rules_test(&files),
        Command::Rules {
            command:
                RulesCommand::Backtest {
                    files,
                    from,
                    to,
                    for_values,
                    slack,
                    format,
                    quiet,
                },
        } => backtest::run(&cfg, files, &from, &to, &for_values, &slack, &format, quiet).await,
        Command::BenchLogs { pipelines, records } => bench::logs::run(&bench::logs::LogsBench {
            pipelines,
            // A benchmark needs some key for the hash action; the configured one if set.
            key: if cfg.logs.redact_key.is_empty() {
                "obs-bench-key".into()
            } else {
                cfg.logs.redact_key.clone()
            },
            records,
        }),
        Command::BenchRollups { series, minutes } => {
            bench::rollups::run(&bench::rollups::RollupsBench { series, minutes })
        }
        Command::BenchTraces {
            traces,
            policies,
            collector,
            query,
            processor,
            pipeline_traces,
            concurrency,
        } => {
            let b = bench::traces::TracesBench {
                traces,
                policies,
                collector,
                query: query.unwrap_or_else(|| format!("http://{}", cfg.query.listen)),
                processor: processor.unwrap_or_else(|| format!("http://{}", cfg.processor.listen)),
                pipeline_traces,
                concurrency,
            };
            bench::traces::run(&cfg, &b).await
        }
        Command::Errors {
            service,
            since,
            limit,
            format,
            url,
            tenant,
        } => {
            let url = url.unwrap_or_else(|| format!("http://{}", cfg.query.listen));
            errors::run(&errors::ErrorsArgs {
                base: &url,
                service: service.as_deref(),
                since: &since,
                limit,
                format: &format,
                tenant: tenant.as_deref(),
            })
            .await
        }
        Command::Sql {
            query,
            format,
            url,
            tenant,
            topic,
            from,
            to,
            slack,
        } => match topic {
            Some(topic) => {
                sql::run_on_topic(&cfg, &topic, (&from, &to, &slack), &query, &format).await
            }
            None => {
                let url = url.unwrap_or_else(|| format!("http://{}", cfg.query.listen));
                sql::run(&url, &query, &format, tenant.as_deref()).await
            }
        },
        Command::Explain {
            query,
            logql,
            start,
            end,
            step,
            tenant,
            max_source_resolution,
            url,
        } => {
            let url = url.unwrap_or_else(|| format!("http://{}", cfg.query.listen));
            let range = match (&start, &end, &step) {
                (Some(s), Some(e), Some(st)) => Some((s.as_str(), e.as_str(), st.as_str())),
                _ => None,
            };
            explain::run(explain::ExplainArgs {
                url: &url,
                query: &query,
                language: if logql { "logql" } else { "promql" },
                range,
                tenant: tenant.as_deref(),
                max_source_resolution: max_source_resolution.as_deref(),
            })
            .await
        }
        Command::Demo {
            records,
            run_id,
            url,
            live,
        } => {
            let url = url.unwrap_or_else(|| format!("http://{}", cfg.collector.listen));
            if live {
                demo::live(&url).await
            } else {
                demo::run(&url, records, run_id.as_deref()).await
            }
        }
        Command::Topics => topics(&cfg).await,
        Command::Auth {
            name,
            tenants,
            access,
        } => {
            print!("{}", new_credential(&name, &tenants, &access)?);
            Ok(())
        }
        Command::Config => {
            // Secrets are shown as set or not, never printed.
            let mut shown = cfg.clone();
            for secret in [
                &mut shown.clickhouse.password,
                &mut shown.logs.redact_key,
                &mut shown.auth.client_token,
                &mut shown.kafka.sasl_password,
            ] {
                if !secret.is_empty() {
                    *secret = "<set>".into();
                }
            }
            for (k, v) in shown.kafka.properties.iter_mut() {
                if k.contains("password") || k.contains("secret") {
                    *v = "<set>".into();
                }
            }
            print!("{}", toml::to_string_pretty(&shown)?);
            Ok(())
        }
    }
}

/// `obs rules check`: promtool's report shape, one block per file.
fn rules_check(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = 0;
    for f in files {
        println!("Checking {}", f.display());
        match obs_stream_processors::rules::file::load(f) {
            Ok(rf) => {
                let n: usize = rf.groups.iter().map(|g| g.rules.len()).sum();
                println!("  SUCCESS: {n} rules found\n");
            }
            Err(problems) => {
                failed += 1;
                println!("  FAILED:");
                for p in problems {
                    println!("{p}");
                }
                println!();
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} rule files have problems",
        files.len()
    );
    Ok(())
}

/// `obs slo generate`.
fn slo_generate(spec: &std::path::Path, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    use obs_stream_processors::rules::slo;
    let name = spec.display().to_string();
    let text = std::fs::read_to_string(spec).with_context(|| format!("reading {name}"))?;
    let rules = slo::parse_spec(&name, &text)
        .and_then(|s| slo::generate(&s).map_err(|e| format!("{name}: {e}")))
        .map_err(anyhow::Error::msg)?;
    match output {
        Some(path) => {
            std::fs::write(path, rules).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{rules}");
            Ok(())
        }
    }
}

/// `obs rules test`: promtool's report shape, one block per file.
fn rules_test(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = 0;
    for f in files {
        println!("Unit Testing:  {}", f.display());
        match obs_stream_processors::rules::unit::run_file(f) {
            Ok(()) => println!("  SUCCESS"),
            Err(errs) => {
                failed += 1;
                eprintln!("  FAILED:");
                for e in errs {
                    eprintln!("{e}");
                    println!();
                }
            }
        }
        println!();
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} unit-test files failed",
        files.len()
    );
    Ok(())
}

/// The schema registry, serving until `stop` completes.
async fn registry(
    cfg: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = SchemaStore::open(&cfg.registry.data_dir).with_context(|| {
        format!(
            "opening the registry in {}",
            cfg.registry.data_dir.display()
        )
    })?;
    tracing::info!(log = %store.path().display(), "registry storage");
    let app = registry_router(Arc::new(store)).merge(ops::router(ready_now()));
    let guard = ops::guard(&cfg, Dialect::Registry, None)?;
    ops::serve_until(&cfg.registry.listen, app, "schema registry", &guard, stop).await
}

fn ready_now() -> ops::Readiness {
    let r = ops::Readiness::default();
    r.set(true);
    r
}

/// Applies migrations, waiting up to a minute for ClickHouse to come up.
async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let client = ch::server_client(&cfg.clickhouse);
    let cluster = cfg.clickhouse.cluster_layout()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let applied = migrations::migrate(
            &client,
            &cfg.clickhouse.database,
            &cfg.retention,
            cluster.as_ref(),
        );
        match applied.await {
            Ok(report) => {
                tracing::info!(applied = ?report.applied, already = ?report.already, database = %cfg.clickhouse.database, "migrations done");
                return sql_tables(cfg).await;
            }
            Err(e) if std::time::Instant::now() < deadline && is_connection_error(&e) => {
                tracing::info!("waiting for ClickHouse at {}: {e}", cfg.clickhouse.url);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e.context(format!("migrating ClickHouse at {}", cfg.clickhouse.url)));
            }
        }
    }
}

/// A new random token and its `[[auth.credentials]]` entry (checked as `[auth]` would).
fn new_credential(name: &str, tenants: &str, access: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("obs_{}", hex::encode(bytes));
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    };
    let credential = obs_runtime::auth::CredentialConfig {
        name: name.to_string(),
        token_sha256: obs_runtime::auth::hash_secret(&token),
        tenants: list(tenants),
        access: list(access),
        ..Default::default()
    };
    obs_runtime::auth::Auth::new(&obs_runtime::auth::AuthConfig {
        credentials: vec![credential.clone()],
        ..Default::default()
    })?;
    let entry = toml::to_string(&credential)?;
    let entry: String = entry
        .lines()
        .filter(|l| !l.ends_with("= \"\""))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(format!(
        "# token (shown once; send it as Authorization: Bearer <token>):\n# {token}\n[[auth.credentials]]\n{entry}"
    ))
}

/// Creates the pipeline's topics (retrying for a minute while the broker is not up) and
/// prints their partition counts.
async fn topics(cfg: &Config) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match obs_runtime::kafka::ensure_topics(&cfg.kafka).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!("waiting for Kafka at {}: {e:#}", cfg.kafka.brokers);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    let counts = obs_runtime::kafka::partition_counts(&cfg.kafka).await?;
    for t in obs_schemas::Topic::ALL {
        println!("{} {}", t.name(), counts.get(&t).copied().unwrap_or(0));
    }
    Ok(())
}

/// The table of every streaming SQL query of `[sql] queries_file`, from its planned
/// output (the sink makes a missing one from the output's schema too).
async fn sql_tables(cfg: &Config) -> anyhow::Result<()> {
    let client = ch::client(&cfg.clickhouse);
    let cluster = cfg.clickhouse.cluster_layout()?;
    for def in obs_runtime::sql_queries::load(&cfg.sql.queries_file)? {
        let q = obs_stream_processors::sql::query::Query::plan(def).await?;
        let ttl = cfg.sql.ttl_days;
        obs_schemas::sql_output::ensure_table(&client, q.name(), &q.columns, ttl, cluster.as_ref())
            .await?;
        tracing::info!(query = q.name(), table = %obs_schemas::sql_output::table_name(q.name()), "SQL output table ready");
    }
    Ok(())
}

fn is_connection_error(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<clickhouse::error::Error>(),
        Some(clickhouse::error::Error::Network(_))
    )
}

/// Every stage in one process, sharing configuration and one read of `obs.spans` (the
/// sinks' reader hands each span message to the trace processor too, see
/// `obs_runtime::tap`). On SIGTERM (or Ctrl-C)
/// every stage finishes what it holds and the process exits 0; if a stage fails, the
/// others are stopped the same way and the process exits with its error.
async fn up(cfg: Config, with_sink: bool, with_processor: bool) -> anyhow::Result<()> {
    // The registry outlives the other stages: while they shut down, sinks still decode.
    let (registry_stop, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    let registry = tokio::spawn(registry(cfg.clone(), async move {
        let _ = registry_stopped.await;
    }));
    let mut stages = tokio::task::JoinSet::new();
    migrate(&cfg).await?;
    let guard = ops::guard(&cfg, Dialect::Query, Some(Access::Read))?;
    let (spans_host, spans_joiner) = if with_sink && with_processor {
        let (h, j) = obs_runtime::tap::pair(obs_schemas::Topic::Spans);
        (Some(h), Some(j))
    } else {
        (None, None)
    };
    stages.spawn(named(
        "collector",
        obs_producers::run(cfg.clone(), ops::Readiness::default()),
    ));
    if with_sink {
        let ready = ops::Readiness::default();
        let (addr, router) = (cfg.sink.listen.clone(), ops::router(ready.clone()));
        stages.spawn(named(
            "sink",
            obs_sinks::run(cfg.clone(), ready, spans_host),
        ));
        let guard = guard.clone();
        stages.spawn(named("sink ops", async move {
            ops::serve(&addr, router, "sink ops", &guard).await
        }));
    }
    stages.spawn(named(
        "query API",
        obs_query_api::run(cfg.clone(), ops::Readiness::default()),
    ));
    if with_processor {
        let ready = ops::Readiness::default();
        let view = obs_stream_processors::RulesView::default();
        let (addr, router) = (
            cfg.processor.listen.clone(),
            ops::router(ready.clone()).merge(view.routes()),
        );
        stages.spawn(named(
            "processor",
            obs_stream_processors::run(cfg.clone(), ready, view, spans_joiner),
        ));
        let guard = guard.clone();
        stages.spawn(named("processor ops", async move {
            ops::serve(&addr, router, "processor ops", &guard).await
        }));
    }
    eprintln!(
        "obs is up: OTLP/HTTP http://{} and http://{} · registry {} · query API http://{} · ClickHouse {} (database {})",
        cfg.collector.listen,
        cfg.collector.otlp_http_listen,
        cfg.registry.url,
        cfg.query.listen,
        cfg.clickhouse.url,
        cfg.clickhouse.database
    );
    let failure = supervise(&mut stages, registry).await;
    // The registry may have stopped already (then its failure is in `failure`).
    let _ = registry_stop.send(());
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("all stages stopped cleanly");
            Ok(())
        }
    }
}

/// How long stages may take to finish what they hold once a shutdown is asked for. Past it
/// the process exits anyway: nothing was acknowledged or committed that is not durable, so
/// the next start re-reads what was not stored.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

type Stages = tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>;

/// Waits for the stages until all have stopped: the first failure (of a stage or of the
/// registry) stops all the others, and once a shutdown is asked for they get
/// [`SHUTDOWN_LIMIT`]. Returns the first failure.
async fn supervise(
    stages: &mut Stages,
    mut registry: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> Option<anyhow::Error> {
    let mut failure: Option<anyhow::Error> = None;
    let mut registry_running = true;
    let mut deadline: Option<tokio::time::Instant> = None;
    while !stages.is_empty() {
        if shutdown::requested() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + SHUTDOWN_LIMIT);
        }
        let limit = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = stages.join_next() => match joined {
                Some(Ok((name, result))) => fail(name, result, &mut failure),
                Some(Err(e)) => fail("a stage", Err(anyhow::anyhow!("panicked: {e}")), &mut failure),
                None => break,
            },
            r = &mut registry, if registry_running => {
                registry_running = false;
                let result = r.unwrap_or_else(|e| Err(anyhow::anyhow!("panicked: {e}")));
                // The registry stops only when told to: anything else is a failure.
                fail("registry", result.and(Err(anyhow::anyhow!("stopped unexpectedly"))), &mut failure);
            }
            _ = shutdown::wait(), if deadline.is_none() => {}
            _ = limit => {
                tracing::warn!(
                    "stages still busy {SHUTDOWN_LIMIT:?} after the shutdown began; exiting (nothing unstored was committed: the next start re-reads it)"
                );
                break;
            }
        }
    }
    failure
}

/// Records how stage `name` ended: a stage that fails, or stops while no shutdown was
/// asked for, is the process's failure (the first one is kept) and stops the others.
fn fail(name: &str, result: anyhow::Result<()>, failure: &mut Option<anyhow::Error>) {
    if shutdown::requested() && result.is_ok() {
        return;
    }
    let e = result
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"))
        .context(format!("{name} failed"));
    if failure.is_none() {
        tracing::error!("{e:#}; stopping the other stages");
        shutdown::request();
        *failure = Some(e);
    }
}

/// A stage's future with its name, for [`up`]'s report.
async fn named<F>(name: &'static str, stage: F) -> (&'static str, anyhow::Result<()>)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    (name, stage.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_now_are_values_not_flags() {
        let cli = Cli::try_parse_from([
            "obs", "sql", "--topic", "obs.logs", "--from", "-10m", "--to", "-1m", "SELECT 1",
        ])
        .unwrap();
        match cli.command {
            Command::Sql { from, to, .. } => {
                assert_eq!((from.as_str(), to.as_str()), ("-10m", "-1m"))
            }
            _ => panic!("not sql"),
        }
        let cli =
            Cli::try_parse_from(["obs", "replay", "--topic", "logs", "--from", "-2h"]).unwrap();
        assert!(matches!(cli.command, Command::Replay { ref from, .. } if from == "-2h"));
        assert!(
            Cli::try_parse_from(["obs", "sql", "--from", "-10m", "SELECT 1"]).is_err(),
            "--from needs --topic"
        );
    }
}
