//! Entry points for the fuzz targets (`fuzz/`) and the test that replays their corpus: each
//! takes a query as a client sends it and runs what the query API does before the engine
//! (parse, check, translate to SQL), dropping the result. A bad query must end in an `Err`
//! (a 400), never a panic or a hang.

use std::collections::HashSet;
use std::sync::OnceLock;

/// PromQL: parse, the range-query type check, and the steps `explain` shows.
pub fn promql(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = obs_promql::parse(query) {
        let _ = obs_promql::check_range_type(&expr);
        let _ = obs_promql::steps(&expr);
    }
}

/// LogQL: parse and translate to the `SELECT`s over `otel_logs` (`explain`).
pub fn logql(data: &[u8]) {
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = crate::logql::explain(query);
    }
}

/// The ad-hoc SQL statement guard, with the engine's usual table functions.
pub fn sql_guard(data: &[u8]) {
    static FUNCTIONS: OnceLock<HashSet<String>> = OnceLock::new();
    let functions = FUNCTIONS.get_or_init(|| {
        [
            "numbers",
            "zeros",
            "values",
            "file",
            "url",
            "merge",
            "remote",
            "s3",
            "view",
            "format",
            "null",
            "generaterandom",
            "generateseries",
            "primes",
            "input",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = crate::sql::statement::check(sql, functions);
    }
}
