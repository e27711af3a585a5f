//! The README's commands, as a new user runs them: `scripts/stack up`, `scripts/stack
//! down`, `scripts/stack up` again on the same state directory. The second `up` must store
//! its own demo records (it checks them by run id and fails otherwise), and afterwards both
//! runs' 200 demo records are in ClickHouse, each once. Uses the stack's fixed loopback
//! ports (9092, 8123, 8080, ...), which no other test uses.

use std::process::Command;

use obs_e2e::repo_root;

fn stack(args: &[&str], state: &std::path::Path) -> std::process::Output {
    Command::new(repo_root().join("scripts/stack"))
        .args(args)
        .env("OBS_STATE", state)
        .output()
        .expect("scripts/stack runs")
}

fn ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "scripts/stack {what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the stack even when an assertion fails.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = stack(&["down"], &self.0);
    }
}

#[test]
fn stack_up_down_up_stores_the_second_runs_demo_records() {
    let state = tempfile::Builder::new()
        .prefix("obs-stack-")
        .tempdir()
        .unwrap();
    let _down = Down(state.path().to_path_buf());
    ok("up", &stack(&["up"], state.path()));
    ok("down", &stack(&["down"], state.path()));
    let second = stack(&["up"], state.path());
    ok("up (second run)", &second);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("this run's 200 demo logs arrived"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let out = Command::new(obs_e2e::obs_bin())
        .args([
            "sql",
            "SELECT uniqExact(LogAttributes['demo.run']) AS runs, count() AS n, \
             uniqExact(LogAttributes['demo.run'], LogAttributes['demo.seq']) AS distinct_records \
             FROM otel_logs WHERE ScopeName = 'obs-demo'",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some("2,400,400"),
        "two runs of 200 demo records, each once: {text}"
    );
    ok("restart", &stack(&["restart"], state.path()));
}
