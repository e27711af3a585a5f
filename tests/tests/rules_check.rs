//! `obs rules check` against the real `promtool check rules` (Prometheus 2.42) on the rule
//! files in `tests/rules/check/`: the same files accepted and the same refused, and for
//! every problem promtool names in a group or rule, the same problem named the same way
//! (parse-error details and YAML decoding messages are the parsers' own and may differ in
//! wording; that they are errors must not).

use std::path::PathBuf;
use std::process::Command;

use obs_e2e::{obs_bin, repo_root};

/// promtool's lines for one file, with the `line:col: ` positions dropped.
fn problems(out: &str, file: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{file}: ")))
        .map(|l| {
            let mut rest = l;
            // Up to two `N:M: ` positions.
            for _ in 0..2 {
                let pos: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ':')
                    .collect();
                if pos.len() > 2 && pos.ends_with(':') && rest[pos.len()..].starts_with(' ') {
                    rest = &rest[pos.len() + 1..];
                }
            }
            rest.to_string()
        })
        .collect()
}

/// The part of a problem both tools must word alike.
fn comparable(p: &str) -> String {
    match p.find("could not parse expression: ") {
        Some(i) => p[..i + "could not parse expression".len()].to_string(),
        None => p.to_string(),
    }
}

#[test]
fn rule_files_get_promtools_verdicts_and_reasons() {
    let dir = repo_root().join("tests/rules/check");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus too small: {files:?}");
    let (mut good, mut bad) = (0, 0);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.arg(name).current_dir(&dir).output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (p_code, p_out) = run(Command::new("promtool").args(["check", "rules"]));
        let (o_code, o_out) = run(Command::new(obs_bin()).args(["rules", "check"]));
        assert_eq!(
            o_code, p_code,
            "{name}: promtool says\n{p_out}\nobs says\n{o_out}"
        );
        let expected_good = name.starts_with("good");
        assert_eq!(
            p_code == Some(0),
            expected_good,
            "{name}: the corpus's own label"
        );
        if expected_good {
            good += 1;
            // The same rule count.
            let count = |out: &str| {
                out.lines()
                    .find(|l| l.contains("SUCCESS"))
                    .map(str::trim)
                    .map(String::from)
            };
            assert_eq!(count(&o_out), count(&p_out), "{name}");
            continue;
        }
        bad += 1;
        let ours: Vec<String> = problems(&o_out, name)
            .iter()
            .map(|p| comparable(p))
            .collect();
        assert!(!ours.is_empty(), "{name}: obs names no problem:\n{o_out}");
        for p in problems(&p_out, name) {
            let named = p.starts_with("group ") || p.to_lowercase().starts_with("groupname");
            if named {
                assert!(
                    ours.contains(&comparable(&p)),
                    "{name}: promtool reports {p:?}; obs reports {ours:#?}"
                );
            }
        }
    }
    eprintln!(
        "rules check: {good} good and {bad} bad files, same verdicts and reasons as promtool 2.42"
    );
}
