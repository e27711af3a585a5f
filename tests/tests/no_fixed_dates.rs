//! Tests cannot rot: no test input carries a calendar date or an epoch timestamp literal.
//! Data with a fixed date is deleted by the tables' TTL once that date is old enough (30
//! days for logs), and a test built on it starts failing on its own; every time a test
//! sends is relative to now. This scans every file under `tests/` and fails naming each
//! date-like literal it finds.

use std::path::{Path, PathBuf};

use obs_e2e::repo_root;

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Date-like literals in `text`: `YYYY-MM-DD` of this century, and runs of exactly 10, 13,
/// 16 or 19 digits starting with 16..19 (epoch s, ms, µs or ns of 2020..2033).
fn dates(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let word = &text[i..i + run];
        let rest = &bytes[i + run..];
        let next_is_word = rest
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if run == 4
            && word.starts_with("20")
            && rest.len() >= 6
            && rest[0] == b'-'
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b'-'
            && rest[4..6].iter().all(u8::is_ascii_digit)
        {
            found.push(text[i..i + run + 6].to_string());
        } else if [10, 13, 16, 19].contains(&run)
            && ["16", "17", "18", "19"].iter().any(|p| word.starts_with(p))
            && !next_is_word
        {
            found.push(word.to_string());
        }
        i += run;
    }
    found
}

#[test]
fn the_literal_finder_finds_dates_and_epochs() {
    // Built from the clock, so this test carries no date of its own.
    let now = chrono::Utc::now();
    let (day, s, ms) = (
        now.format("%Y-%m-%d").to_string(),
        now.timestamp().to_string(),
        now.timestamp_millis().to_string(),
    );
    assert_eq!(
        dates(&format!("at {day}T10:00:00Z, ts {s} or {ms}; id 12345")),
        [day, s, ms]
    );
    assert!(dates("base + 4 * MINUTE_NS, port 8080, 4bf92f3577b34da6, 1000000000000").is_empty());
}

#[test]
fn no_test_input_carries_a_fixed_date() {
    let root = repo_root().join("tests");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut offenders = Vec::new();
    for path in all {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for d in dates(&text) {
            offenders.push(format!(
                "{}: {d}",
                path.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "fixed dates in test inputs (make them relative to now):\n{}",
        offenders.join("\n")
    );
}
