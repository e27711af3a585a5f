//! The Alertmanager configurations shipped in `config/alertmanager/` are valid for
//! Alertmanager 0.25 (`amtool check-config`), the compose one once `render.sh` has put the
//! secrets from the environment into it, and route as documented: pages to PagerDuty,
//! OpsGenie and Slack, tickets to email and Slack, a page inhibiting its ticket.

use std::process::Command;

use obs_e2e::repo_root;

fn amtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("amtool").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn shipped_alertmanager_configs_are_valid_and_route_as_documented() {
    let dir = repo_root().join("config/alertmanager");
    let (ok, out) = amtool(&["check-config", &dir.join("local.yml").display().to_string()]);
    assert!(ok, "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let rendered = tmp.path().join("alertmanager.yml");
    let status = Command::new("sh")
        .arg(dir.join("render.sh"))
        .arg(dir.join("alertmanager.yml"))
        .arg(&rendered)
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/x",
        )
        .env("SLACK_CHANNEL", "#alerts")
        .env("PAGERDUTY_ROUTING_KEY", "routing-key")
        .env("OPSGENIE_API_KEY", "opsgenie-key")
        .env("SMTP_SMARTHOST", "smtp.example.com:587")
        .env("SMTP_FROM", "obs@example.com")
        .env("SMTP_USERNAME", "obs")
        .env("SMTP_PASSWORD", "p&ss|w$rd")
        .env("ALERT_EMAIL_TO", "oncall@example.com")
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&rendered).unwrap();
    assert!(!text.contains("${"), "every placeholder replaced:\n{text}");
    assert!(
        text.contains("smtp_auth_password: 'p&ss|w$rd'"),
        "values taken verbatim"
    );
    let file = rendered.display().to_string();
    let (ok, out) = amtool(&["check-config", &file]);
    assert!(ok, "{out}");
    assert!(
        out.contains("1 inhibit rules") && out.contains("4 receivers"),
        "{out}"
    );

    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", file.as_str()];
        args.extend_from_slice(labels);
        let (ok, out) = amtool(&args);
        assert!(ok, "{out}");
        out.lines().next().unwrap_or("").trim().to_string()
    };
    assert_eq!(
        route(&["alertname=X", "severity=page"]),
        "pagerduty,opsgenie,slack"
    );
    assert_eq!(route(&["alertname=X", "severity=ticket"]), "email,slack");
    assert_eq!(route(&["alertname=X"]), "slack");
}
