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

/// Runs `query` as `tenant` (no header when `None`) and returns status and CSV body.
async fn sql_as(stack: &Stack, tenant: Option<&str>, query: &str) -> (u16, String) {
    let mut req = http(60)
        .get(format!("{}/api/v1/sql", stack.query_url()))
        .query(&[("query", query), ("format", "csv")]);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_sees_only_the_tenants_rows() {
    let stack = Stack::start().await.unwrap();
    // Three rows of tenant a, two of b, one of the default tenant, now-dated (TTL).
    stack
        .db()
        .query(
            "INSERT INTO otel_logs (Timestamp, ServiceName, Body, Tenant) VALUES \
             (now64(9), 'api', 'a1', 'a'), (now64(9), 'api', 'a2', 'a'), (now64(9), 'web', 'a3', 'a'), \
             (now64(9), 'api', 'b1', 'b'), (now64(9), 'api', 'b2', 'b'), (now64(9), 'api', 'd1', 'default')",
        )
        .execute()
        .await
        .unwrap();
    stack
        .db()
        .query(
            "INSERT INTO obs_events (Timestamp, EventId, Tenant, Type, Title) VALUES \
             (now64(9), 'e1', 'a', 'deploy', 'a deploy'), (now64(9), 'e2', 'b', 'deploy', 'b deploy')",
        )
        .execute()
        .await
        .unwrap();

    let one = |n: &str| format!("\"n\"\n{n}\n");
    for (tenant, want) in [(Some("a"), "3"), (Some("b"), "2"), (None, "1")] {
        assert_eq!(
            sql_as(&stack, tenant, "SELECT count() AS n FROM otel_logs").await,
            (200, one(want)),
            "{tenant:?}"
        );
    }
    // However the table is reached: qualified, aliased, subquery, CTE, IN, JOIN, UNION,
    // view(), another table with a Tenant column.
    for q in [
        "SELECT count() AS n FROM obs.otel_logs",
        "SELECT count() AS n FROM `obs`.`otel_logs` AS l",
        "SELECT count() AS n FROM (SELECT * FROM otel_logs)",
        "WITH x AS (SELECT Body FROM otel_logs) SELECT count() AS n FROM x",
        "SELECT (SELECT count() FROM otel_logs) AS n FROM system.one",
        "SELECT count() AS n FROM otel_logs WHERE Body IN (SELECT Body FROM obs.otel_logs)",
        "SELECT count() AS n FROM otel_logs AS x JOIN otel_logs AS y ON x.Body = y.Body",
        "SELECT count() AS n FROM (SELECT Body FROM otel_logs UNION ALL SELECT Title FROM obs_events WHERE 0)",
        "SELECT count() AS n FROM view(SELECT * FROM otel_logs)",
        "SELECT (SELECT count() FROM otel_logs) + (SELECT count() FROM obs_events) - 1 AS n",
    ] {
        assert_eq!(sql_as(&stack, Some("a"), q).await, (200, one("3")), "{q}");
    }
    assert_eq!(
        sql_as(
            &stack,
            Some("b"),
            "SELECT DISTINCT Tenant AS n FROM otel_logs"
        )
        .await,
        (200, "\"n\"\n\"b\"\n".into())
    );
    // What would read around the filter is refused, saying why.
    for (q, why) in [
        (
            "SELECT count() AS n FROM merge('obs', '^otel_logs$')",
            "merge() is not available here",
        ),
        (
            "SELECT count() FROM merge(currentDatabase(), 'otel')",
            "merge()",
        ),
        (
            "SELECT file('/etc/hostname')",
            "file() is not available here",
        ),
        (
            "SELECT query FROM system.query_log",
            "system.query_log is not available here",
        ),
        ("SHOW PROCESSLIST", "not available here"),
    ] {
        let (status, body) = sql_as(&stack, Some("a"), q).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(why), "{q}: {body}");
    }
    // The filter cannot be lifted from inside the query.
    let (status, body) = sql_as(
        &stack,
        Some("a"),
        "SELECT count() FROM otel_logs SETTINGS additional_table_filters = {}",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("readonly"), "{body}");
    // A tenant value that is not a tenant name is refused before any SQL.
    let (status, body) = sql_as(&stack, Some("a' OR '1'='1"), "SELECT 1").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid X-Scope-OrgID"), "{body}");

    // `obs sql --tenant` passes the tenant and prints a table.
    let out = Command::new(obs_bin())
        .args([
            "sql",
            "SELECT ServiceName AS service, count() AS records FROM otel_logs GROUP BY service ORDER BY service",
            "--url",
            &stack.query_url(),
            "--tenant",
            "a",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split(['│', '┆'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == 2)
        .collect();
    assert_eq!(
        rows,
        [
            vec!["service", "records"],
            vec!["api", "2"],
            vec!["web", "1"]
        ],
        "{text}"
    );
    assert!(text.trim_end().ends_with("2 rows"), "{text}");
}
