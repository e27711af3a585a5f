//! The query API's read-only SQL endpoint and the `obs sql` command, on the real stack.

use std::process::Command;

use obs_e2e::{Stack, http, obs_bin};

async fn sql(stack: &Stack, query: &str, format: &str) -> (u16, String) {
    let resp = http(60)
        .get(format!("{}/api/v1/sql", stack.query_url()))
        .query(&[("query", query), ("format", format)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_endpoint_is_read_only_and_bounded() {
    let stack = Stack::start_with(&[("OBS_QUERY__SQL_MAX_ROWS", "1000")])
        .await
        .unwrap();

    let (status, body) = sql(
        &stack,
        "SELECT number AS n, toString(number) AS s FROM system.numbers LIMIT 3",
        "json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"], 3);
    assert_eq!(v["data"][2]["s"], "2");
    assert_eq!(v["meta"][0]["name"], "n");

    let (status, body) = sql(
        &stack,
        "SELECT number AS n FROM system.numbers LIMIT 2",
        "csv",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "\"n\"\n0\n1\n"));

    // POST with a form body works the same; `?` in the statement is literal text.
    let resp = http(60)
        .post(format!("{}/api/v1/sql", stack.query_url()))
        .form(&[("query", "SELECT 'why?' AS q"), ("format", "csv")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "\"q\"\n\"why?\"\n");

    let (status, body) = sql(&stack, "INSERT INTO otel_logs (Body) VALUES ('x')", "json").await;
    assert_eq!(status, 400);
    assert!(body.contains("only read-only statements"), "{body}");

    // The engine enforces read-only too: settings cannot be lifted from inside a query.
    let (status, body) = sql(&stack, "SELECT 1 SETTINGS readonly = 0", "json").await;
    assert_eq!(status, 400);
    assert!(body.contains("readonly"), "{body}");

    // More rows than allowed is an error, not a silently cut result.
    let (status, body) = sql(
        &stack,
        "SELECT number FROM system.numbers LIMIT 5000",
        "json",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("Limit for result exceeded"), "{body}");

    let (status, body) = sql(&stack, "SELECT * FROM no_such_table", "json").await;
    assert_eq!(status, 400);
    assert!(body.contains("Code: 60"), "{body}");

    let (status, body) = sql(&stack, "SELECT 1", "xml").await;
    assert_eq!(status, 400);
    assert!(body.contains("use json, csv or arrow"), "{body}");

    let (status, _) = sql(&stack, "SELECT 1 AS x", "arrow").await;
    assert_eq!(status, 200);

    let out = Command::new(obs_bin())
        .args([
            "sql",
            "SELECT 'checkout' AS service, 3 AS records",
            "--url",
            &stack.query_url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("service") && text.contains("checkout") && text.contains("1 row"),
        "{text}"
    );

    let out = Command::new(obs_bin())
        .args(["sql", "DROP TABLE otel_logs", "--url", &stack.query_url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only read-only statements"));
    let exists: u8 = stack
        .db()
        .query("EXISTS TABLE otel_logs")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(exists, 1);
}
