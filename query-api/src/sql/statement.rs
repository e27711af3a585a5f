//! What a statement may do before it is sent: one read-only statement, no `FORMAT`, and
//! nothing that reads data around the tenant filter (table functions such as `merge()`,
//! system tables holding other tenants' queries, `file()`).
//!
//! The checks work on tokens: identifiers (bare, `"quoted"` or `` `quoted` ``) and
//! punctuation, with string literals and comments skipped, so neither quoting nor comments
//! hide a name from them.

use std::collections::HashSet;

/// One token of a statement (string literals, numbers and comments are left out).
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier or keyword; `quoted` when written in `"..."` or `` `...` ``.
    Ident { text: String, quoted: bool },
    /// A string literal (its text does not matter here).
    Literal,
    /// Any other single character.
    Punct(char),
}

/// Splits `sql` into tokens.
fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                let mut text = String::new();
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            text.push(e);
                        }
                    } else if d == c {
                        // A doubled quote is the quote itself.
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    } else {
                        text.push(d);
                    }
                }
                out.push(if c == '\'' {
                    Token::Literal
                } else {
                    Token::Ident { text, quoted: true }
                });
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == '.')
                {
                    chars.next();
                }
                out.push(Token::Literal);
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut text = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        text.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Ident {
                    text,
                    quoted: false,
                });
            }
            c if c.is_whitespace() => {}
            c => out.push(Token::Punct(c)),
        }
    }
    out
}

/// Table functions that read no stored table (or only through a nested `SELECT`, which the
/// tenant filter reaches): these stay available.
pub const ALLOWED_TABLE_FUNCTIONS: &[&str] = &[
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "values",
    "generaterandom",
    "generateseries",
    "generate_series",
    "primes",
    "null",
    "format",
    "view",
];

/// System tables a tenant may read: constants, numbers and the schema (no query logs or
/// process lists, which carry other tenants' queries and their values).
pub const ALLOWED_SYSTEM_TABLES: &[&str] = &[
    "one",
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "databases",
    "tables",
    "columns",
    "functions",
    "table_functions",
    "data_type_families",
    "formats",
    "time_zones",
    "settings",
];

/// Rejects what the endpoint cannot run as asked, with what to do instead.
/// `table_functions` are the engine's table function names, lower case.
pub fn check(sql: &str, table_functions: &HashSet<String>) -> Result<(), String> {
    let toks = tokens(sql);
    let word = |t: &Token| match t {
        Token::Ident {
            text,
            quoted: false,
        } => Some(text.to_ascii_uppercase()),
        _ => None,
    };
    let Some(first) = toks.first() else {
        return Err("empty query: pass the statement as `query`".into());
    };
    const READS: &[&str] = &[
        "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS",
    ];
    let first = word(first).unwrap_or_default();
    if !READS.contains(&first.as_str()) {
        return Err(format!(
            "only read-only statements are allowed here (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS), not {first}"
        ));
    }
    let body_end = toks
        .iter()
        .rposition(|t| *t != Token::Punct(';'))
        .map_or(0, |i| i + 1);
    if toks[..body_end].contains(&Token::Punct(';')) {
        return Err("one statement per request".into());
    }
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        match word(t).as_deref() {
            Some("FORMAT") if next != Some(&Token::Punct('(')) => {
                return Err(
                    "remove the FORMAT clause; choose the output with format=json|csv|arrow".into(),
                );
            }
            Some("PROCESSLIST") => {
                return Err(
                    "SHOW PROCESSLIST is not available here: it shows other tenants' queries"
                        .into(),
                );
            }
            _ => {}
        }
        let Token::Ident { text, .. } = t else {
            continue;
        };
        let lower = text.to_ascii_lowercase();
        let after_dot = i > 0 && toks[i - 1] == Token::Punct('.');
        if next == Some(&Token::Punct('('))
            && !after_dot
            && table_functions.contains(&lower)
            && !ALLOWED_TABLE_FUNCTIONS.contains(&lower.as_str())
        {
            return Err(format!(
                "{text}() is not available here: it reads data around the tenant filter (allowed table functions: {}); query tables by name",
                ALLOWED_TABLE_FUNCTIONS.join(", ")
            ));
        }
        if text == "system"
            && next == Some(&Token::Punct('.'))
            && let Some(Token::Ident { text: table, .. }) = toks.get(i + 2)
            && !ALLOWED_SYSTEM_TABLES.contains(&table.as_str())
        {
            return Err(format!(
                "system.{table} is not available here: of the system tables only {} are",
                ALLOWED_SYSTEM_TABLES.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fns() -> HashSet<String> {
        [
            "merge", "numbers", "file", "remote", "view", "format", "values", "url",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    #[test]
    fn reads_pass_and_writes_do_not() {
        let f = fns();
        assert!(check("SELECT 1", &f).is_ok());
        assert!(check("  with x as (select 1) select * from x;", &f).is_ok());
        assert!(check("SELECT 'a;b' -- ; comment", &f).is_ok());
        assert!(check("SELECT 'FORMAT CSV'", &f).is_ok());
        assert!(check("SELECT 'it''s' AS a, \"b\"\"c\" FROM t", &f).is_ok());
        assert!(
            check("INSERT INTO t VALUES (1)", &f)
                .unwrap_err()
                .contains("INSERT")
        );
        assert!(check("DROP TABLE t", &f).is_err());
        assert!(
            check("SELECT 1; DROP TABLE t", &f)
                .unwrap_err()
                .contains("one statement")
        );
        assert!(
            check("SELECT 1 FORMAT CSV", &f)
                .unwrap_err()
                .contains("format=")
        );
        assert!(check("/* only */ -- comments", &f).is_err());
    }

    #[test]
    fn table_functions_and_system_logs_that_bypass_the_filter_are_refused() {
        let f = fns();
        assert!(check("SELECT count() FROM numbers(3)", &f).is_ok());
        assert!(check("SELECT * FROM view(SELECT * FROM otel_logs)", &f).is_ok());
        assert!(check("SELECT format(CSV, '1')", &f).is_ok());
        assert!(check("SELECT number FROM system.numbers LIMIT 3", &f).is_ok());
        assert!(check("SELECT name FROM `system`.\"tables\"", &f).is_ok());
        for bad in [
            "SELECT count() FROM merge('obs', 'otel_logs')",
            "SELECT count() FROM MERGE ('obs', 'otel_logs')",
            "SELECT count() FROM `merge`('obs', 'otel_logs')",
            "SELECT count() FROM merge/**/('obs', 'otel_logs')",
            "SELECT file('/etc/hostname')",
            "SELECT * FROM t WHERE x IN (SELECT * FROM remote('h', obs.otel_logs))",
        ] {
            let e = check(bad, &f).unwrap_err();
            assert!(e.contains("not available here"), "{bad}: {e}");
        }
        for bad in [
            "SELECT query FROM system.query_log",
            "SELECT query FROM `system`.`processes`",
            "SELECT query FROM \"system\" . query_log",
            "SELECT * FROM system/**/.query_log",
            "SHOW PROCESSLIST",
        ] {
            let e = check(bad, &f).unwrap_err();
            assert!(e.contains("not available here"), "{bad}: {e}");
        }
        // A column of that name is not a call.
        assert!(check("SELECT t.merge FROM t", &f).is_ok());
    }
}
