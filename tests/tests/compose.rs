//! docker-compose.yml as a real compose implementation reads it (Debian's docker-compose
//! validates and resolves a file without a Docker engine): every service the pipeline
//! needs, images pinned, health checks, start order by health, a named volume for every
//! stateful service, the ports of DESIGN.md §6, and every `OBS_*` setting a key that
//! `obs config` knows.

use std::collections::BTreeMap;
use std::process::Command;

use obs_e2e::{obs_bin, repo_root};
use serde_yaml_ng::Value;

/// The file as `docker-compose config` resolves it (anchors, merges, defaults).
fn resolved() -> Value {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(repo_root().join("docker-compose.yml"))
        .arg("config")
        .output()
        .expect("docker-compose runs (scripts/stack install installs Debian's)");
    assert!(
        out.status.success(),
        "docker-compose refuses the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("docker-compose prints YAML")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_has_what_the_stack_needs() {
    let file = resolved();
    let services = file["services"].as_mapping().expect("services");
    let name = |k: &Value| k.as_str().unwrap().to_string();
    let by_name: BTreeMap<String, &Value> = services.iter().map(|(k, v)| (name(k), v)).collect();
    let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    for needed in [
        "kafka",
        "schema-registry",
        "clickhouse",
        "migrate",
        "topics",
        "collector",
        "processor",
        "sink",
        "query",
        "alertmanager",
        "grafana",
    ] {
        assert!(names.contains(&needed), "no {needed} service in {names:?}");
    }
    let stages = ["collector", "processor", "sink", "query"];
    let ours = |s: &str| by_name[s].get("build").is_some();
    for (s, svc) in &by_name {
        // Pulled images name a version.
        if !ours(s) {
            let image = svc["image"].as_str().unwrap_or_default();
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
            assert!(
                !tag.is_empty() && tag != "latest",
                "{s}: image {image:?} is not pinned"
            );
        }
        // Long-running services say when they are healthy.
        if !["migrate", "topics"].contains(&s.as_str()) {
            assert!(
                svc["healthcheck"]["test"].as_sequence().is_some(),
                "{s} has no health check"
            );
        }
    }
    // Start order by health: the stages after the infrastructure is healthy and the
    // one-shot migrate and topics services have finished.
    for s in stages {
        let deps = &by_name[s]["depends_on"];
        for (dep, condition) in [
            ("kafka", "service_healthy"),
            ("schema-registry", "service_healthy"),
            ("clickhouse", "service_healthy"),
            ("migrate", "service_completed_successfully"),
            ("topics", "service_completed_successfully"),
        ] {
            assert_eq!(
                deps[dep]["condition"].as_str(),
                Some(condition),
                "{s} does not wait for {dep} ({condition})"
            );
        }
    }
    assert_eq!(strings(&by_name["topics"]["command"]), ["topics"]);
    assert_eq!(strings(&by_name["migrate"]["command"]), ["migrate"]);
    assert_eq!(
        by_name["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].as_str(),
        Some("false"),
        "topics come from the topics service, as schemas/ names them"
    );
    // Every stateful service keeps its data in a declared named volume.
    let declared: Vec<String> = file["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(name).collect())
        .unwrap_or_default();
    for (s, path) in [
        ("kafka", "/var/lib/kafka/data"),
        ("clickhouse", "/var/lib/clickhouse"),
        ("alertmanager", "/alertmanager"),
        ("grafana", "/var/lib/grafana"),
    ] {
        let volumes = by_name[s]["volumes"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let named = volumes.iter().find_map(|v| {
            // Resolved volumes are mappings (type, source, target), or "source:target" text.
            let (source, target) = match v {
                Value::String(t) => {
                    let mut parts = t.splitn(3, ':');
                    (parts.next()?.to_string(), parts.next()?.to_string())
                }
                m => (
                    m["source"].as_str()?.to_string(),
                    m["target"].as_str()?.to_string(),
                ),
            };
            (target == path).then_some(source)
        });
        let named = named.unwrap_or_else(|| panic!("{s} keeps {path} in no volume"));
        assert!(
            declared.contains(&named),
            "{s}: volume {named} is not declared"
        );
    }
    // The ports of DESIGN.md §6, published on the host.
    for (s, ports) in [
        ("kafka", &[9092][..]),
        ("schema-registry", &[8081]),
        ("clickhouse", &[8123]),
        ("collector", &[8080, 4317, 4318, 9411]),
        ("query", &[8090]),
        ("alertmanager", &[9093]),
        ("grafana", &[3000]),
    ] {
        let published: Vec<u64> = by_name[s]["ports"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| match p {
                Value::String(t) => t.split(':').next()?.parse().ok(),
                m => m["published"]
                    .as_u64()
                    .or_else(|| m["published"].as_str()?.parse().ok()),
            })
            .collect();
        for port in ports {
            assert!(
                published.contains(&(*port as u64)),
                "{s} does not publish {port}: {published:?}"
            );
        }
    }
    // Every OBS_* setting of our services is a key `obs config` knows.
    let out = Command::new(obs_bin())
        .arg("config")
        .output()
        .expect("obs runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    for (s, svc) in &by_name {
        if !ours(s) {
            continue;
        }
        let env = svc["environment"].as_mapping().cloned().unwrap_or_default();
        for key in env.keys().filter_map(Value::as_str) {
            let Some(path) = key.strip_prefix("OBS_") else {
                continue;
            };
            let mut at = &config;
            let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            for (i, part) in parts.iter().enumerate() {
                let next = at.get(part);
                assert!(next.is_some(), "{s}: {key} names no key of obs config");
                if i + 1 < parts.len() {
                    at = next
                        .unwrap()
                        .as_table()
                        .unwrap_or_else(|| panic!("{s}: {key}"));
                }
            }
        }
    }
}

/// `obs topics` (compose's `topics` service) creates every topic `schemas/` names, raw
/// topics with `raw_partitions`, on a broker whose auto-creation would not.
#[tokio::test(flavor = "multi_thread")]
async fn obs_topics_creates_the_topics_schemas_names() {
    let dir = tempfile::tempdir().unwrap();
    let broker = obs_e2e::Broker::start(dir.path()).await.unwrap();
    let out = Command::new(obs_bin())
        .arg("topics")
        .env("OBS_KAFKA__BROKERS", broker.bootstrap())
        .env("OBS_KAFKA__RAW_PARTITIONS", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(String, i32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (t, n) = l.split_once(' ').unwrap();
            (t.to_string(), n.parse().unwrap())
        })
        .collect();
    let want: Vec<(String, i32)> = obs_schemas::Topic::ALL
        .iter()
        .map(|t| {
            let n = if t.default_partitions() > 1 {
                4
            } else {
                t.default_partitions()
            };
            (t.name().to_string(), n)
        })
        .collect();
    assert_eq!(got, want);
}
