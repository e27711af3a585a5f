//! `obs rules test` against the real `promtool test rules` (Prometheus 2.42) on the
//! unit-test corpus in `tests/rules/unit/`: every file gets the same verdict from both, a
//! failing file the same report, and every passing file with one expectation changed is
//! failed by both.

use std::path::{Path, PathBuf};
use std::process::Command;

use obs_e2e::{obs_bin, repo_root};
use serde_yaml_ng::{Mapping, Value};

/// Exit code and report (stdout and stderr, our final `error:` summary left out).
fn run(cmd: &mut Command, file: &Path, dir: &Path) -> (Option<i32>, String) {
    let out = cmd.arg(file).current_dir(dir).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = text
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.code(), report)
}

fn verdicts(file: &Path, dir: &Path) -> ((Option<i32>, String), (Option<i32>, String)) {
    (
        run(Command::new("promtool").args(["test", "rules"]), file, dir),
        run(Command::new(obs_bin()).args(["rules", "test"]), file, dir),
    )
}

fn map(v: &mut Value) -> &mut Mapping {
    v.as_mapping_mut().expect("a mapping")
}

fn key(k: &str) -> Value {
    Value::String(k.into())
}

/// Changes one expectation of the first test group: an alert test gets an extra expected
/// label (or an expected alert where none was), else an expression test's first value
/// grows by 1 (or an unexpected sample is expected).
fn mutate(doc: &mut Value) -> String {
    let group = &mut map(doc).get_mut(key("tests")).unwrap()[0];
    if let Some(alerts) = map(group).get_mut(key("alert_rule_test")) {
        let test = alerts.as_sequence_mut().unwrap().last_mut().unwrap();
        let name = test["alertname"].as_str().unwrap().to_string();
        let exp = map(test)
            .entry(key("exp_alerts"))
            .or_insert(Value::Sequence(vec![]));
        let exp = exp.as_sequence_mut().unwrap();
        let mut extra = Mapping::new();
        extra.insert(key("mutated"), key("true"));
        if exp.is_empty() {
            let mut alert = Mapping::new();
            alert.insert(key("exp_labels"), Value::Mapping(extra));
            exp.push(Value::Mapping(alert));
            return format!("{name}: an alert expected where none fires");
        }
        let labels = map(&mut exp[0])
            .entry(key("exp_labels"))
            .or_insert(Value::Mapping(Mapping::new()));
        map(labels).insert(key("mutated"), key("true"));
        return format!("{name}: an extra label expected");
    }
    let test = &mut map(group).get_mut(key("promql_expr_test")).unwrap()[0];
    let expr = test["expr"].as_str().unwrap().to_string();
    let samples = map(test)
        .entry(key("exp_samples"))
        .or_insert(Value::Sequence(vec![]))
        .as_sequence_mut()
        .unwrap();
    if samples.is_empty() {
        let mut s = Mapping::new();
        s.insert(key("labels"), key("{mutated=\"true\"}"));
        s.insert(key("value"), Value::Number(1.into()));
        samples.push(Value::Mapping(s));
        return format!("{expr}: a sample expected where none is");
    }
    let v = samples[0]["value"].as_f64().unwrap();
    map(&mut samples[0]).insert(key("value"), Value::Number((v + 1.0).into()));
    format!("{expr}: value {v} changed to {}", v + 1.0)
}

#[test]
fn unit_test_files_get_promtools_verdicts() {
    let dir = repo_root().join("tests/rules/unit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "corpus too small: {}", files.len());
    let scratch = tempfile::tempdir().unwrap();
    let (mut passing, mut failing) = (0, 0);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let ((p_code, p_out), (o_code, o_out)) = verdicts(f, &dir);
        assert_eq!(
            o_code, p_code,
            "{name}: promtool says\n{p_out}\nobs says\n{o_out}"
        );
        if p_code != Some(0) {
            // A failing file: the same failures, worded alike.
            assert_eq!(o_out, p_out, "{name}");
            failing += 1;
            continue;
        }
        passing += 1;
        // The same file with one expectation changed fails in both.
        let mut doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let rule_files = map(&mut doc).get_mut(key("rule_files")).unwrap();
        for rf in rule_files.as_sequence_mut().unwrap() {
            *rf = Value::String(dir.join(rf.as_str().unwrap()).display().to_string());
        }
        let change = mutate(&mut doc);
        let mutated = scratch.path().join(&name);
        std::fs::write(&mutated, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        let ((p_code, p_out), (o_code, o_out)) = verdicts(&mutated, scratch.path());
        assert_eq!(
            p_code,
            Some(1),
            "{name} ({change}): promtool must fail it\n{p_out}"
        );
        assert_eq!(
            o_code,
            Some(1),
            "{name} ({change}): obs must fail it\n{o_out}"
        );
    }
    assert!(
        passing >= 25 && failing >= 3,
        "{passing} passing, {failing} failing"
    );
    eprintln!(
        "rules test: {passing} passing and {failing} failing files, same verdicts as promtool 2.42; {passing} mutated files failed by both"
    );
}
