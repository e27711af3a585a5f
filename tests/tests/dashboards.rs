//! The Grafana provisioning files hold together: every dashboard parses, has a unique uid
//! and title, and every panel query names a datasource that `config/grafana/datasources.yml`
//! provisions; the demo SLO's rule file is what `obs slo generate` makes of its spec. (The
//! panels' queries run against live demo data in `stack_script`.)

use std::collections::BTreeSet;

use obs_e2e::dashboards;
use obs_e2e::repo_root;

#[test]
fn every_dashboard_parses_and_uses_provisioned_datasources() {
    let datasources: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_root().join("config/grafana/datasources.yml")).unwrap(),
    )
    .unwrap();
    let provisioned: BTreeSet<String> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap().to_string())
        .collect();
    let files = dashboards::dashboard_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "logs.json",
            "pipeline-health.json",
            "services.json",
            "slo.json"
        ]
    );
    let (mut uids, mut titles) = (BTreeSet::new(), BTreeSet::new());
    for file in &files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{file:?}: uid taken"
        );
        assert!(
            titles.insert(d["title"].as_str().unwrap().to_string()),
            "{file:?}: title taken"
        );
        let queries = dashboards::panel_queries(file, 1_800_000_000).unwrap();
        let panels = d["panels"].as_array().unwrap();
        assert!(
            queries.len() >= panels.len(),
            "{file:?}: a panel without a query"
        );
        for q in queries {
            assert!(
                provisioned.contains(&q.datasource),
                "{file:?} / {}: datasource {} is not provisioned",
                q.panel,
                q.datasource
            );
        }
    }
}

#[test]
fn the_demo_slo_rule_file_is_generated_from_its_spec() {
    let out = std::process::Command::new(obs_e2e::obs_bin())
        .args(["slo", "generate"])
        .arg(repo_root().join("config/slo/checkout.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(repo_root().join("config/rules/checkout-slo.rules.yml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "regenerate: obs slo generate config/slo/checkout.yml -o config/rules/checkout-slo.rules.yml"
    );
}
