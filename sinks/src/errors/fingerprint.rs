//! Grouping exceptions as Sentry does for its default grouping, reduced to what span
//! events and logs carry: the exception type, the message with its variable parts
//! replaced, and the innermost frames of the stack trace (file and function, no line
//! numbers, so an edit elsewhere in a file does not split a group).

use std::sync::OnceLock;

use regex::Regex;

/// Innermost frames that take part in the fingerprint.
pub const TOP_FRAMES: usize = 3;

/// An exception reduced to what groups it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// Hex of the hash of type, normalised message and top frames.
    pub fingerprint: String,
    /// The message with variable parts replaced (`<num>`, `<hex>`, `<uuid>`, ...).
    pub normalized_message: String,
    /// Innermost frames first, `file:function`.
    pub top_frames: Vec<String>,
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            (
                r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                "<uuid>",
            ),
            (r"[\w.+-]+@[\w-]+\.[\w.-]+", "<email>"),
            (r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b", "<ip>"),
            (r"\b0x[0-9a-fA-F]+\b", "<hex>"),
            (r"\b[0-9a-fA-F]{8,}\b", "<id>"),
            (r"\d+(\.\d+)?", "<num>"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("pattern compiles"), r))
        .collect()
    })
}

/// The message with its variable parts replaced.
pub fn normalize_message(message: &str) -> String {
    let mut out = message.trim().to_string();
    for (re, with) in patterns() {
        // A long hex word with digits and letters is an id (not "deadbeef", not "12345678").
        if *with == "<id>" {
            out = re
                .replace_all(&out, |c: &regex::Captures| {
                    let w = &c[0];
                    let mixed = w.bytes().any(|b| b.is_ascii_digit())
                        && w.bytes().any(|b| b.is_ascii_alphabetic());
                    if mixed {
                        "<hex>".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .into_owned();
        } else {
            out = re.replace_all(&out, *with).into_owned();
        }
    }
    out
}

fn frame_patterns() -> &'static [(Regex, bool)] {
    static P: OnceLock<Vec<(Regex, bool)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // Python: outermost first, so the innermost frames are the last.
            (
                r#"^\s*File "(?P<file>[^"]+)", line \d+, in (?P<func>\S+)"#,
                true,
            ),
            // JVM: at pkg.Class.method(File.java:12), innermost first.
            (
                r"^\s*at (?P<func>[\w$.<>]+)\((?P<file>[^:)]*)(:\d+)?\)",
                false,
            ),
            // JavaScript: at func (file:line:col), innermost first.
            (
                r"^\s*at (?P<func>[^\s(]+) \((?P<file>[^:)]+)(:\d+)*\)",
                false,
            ),
        ]
        .into_iter()
        .map(|(p, outermost_first)| (Regex::new(p).expect("pattern compiles"), outermost_first))
        .collect()
    })
}

/// The innermost frames of a stack trace as `file:function` (file without directories).
pub fn top_frames(stacktrace: &str) -> Vec<String> {
    let mut frames = Vec::new();
    let mut reversed = false;
    for line in stacktrace.lines() {
        for (re, outermost_first) in frame_patterns() {
            if let Some(c) = re.captures(line) {
                let file = c.name("file").map_or("", |m| m.as_str());
                let file = file.rsplit(['/', '\\']).next().unwrap_or(file);
                frames.push(format!("{file}:{}", &c["func"]));
                reversed = *outermost_first;
                break;
            }
        }
    }
    if reversed {
        frames.reverse();
    }
    frames.truncate(TOP_FRAMES);
    frames
}

/// How an exception groups.
pub fn group(exception_type: &str, message: &str, stacktrace: &str) -> Grouping {
    let normalized_message = normalize_message(message);
    let top_frames = top_frames(stacktrace);
    let key = format!(
        "{}\n{}\n{}",
        exception_type.trim(),
        normalized_message,
        top_frames.join("\n")
    );
    Grouping {
        fingerprint: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes())),
        normalized_message,
        top_frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_of_messages_do_not_split_groups() {
        assert_eq!(
            normalize_message("invalid quantity 3 for item 42"),
            "invalid quantity <num> for item <num>"
        );
        assert_eq!(
            normalize_message(
                "user 550e8400-e29b-41d4-a716-446655440000 at 10.0.0.1:8080 (a@b.io) ptr 0xdeadbeef id 3f2a9c1d7e"
            ),
            "user <uuid> at <ip> (<email>) ptr <hex> id <hex>"
        );
        assert_eq!(normalize_message("cafe face"), "cafe face");
    }

    #[test]
    fn frames_are_the_innermost_without_lines() {
        let py = "Traceback (most recent call last):\n  File \"/app/shop/cart.py\", line 10, in checkout\n    add(x)\n  File \"/app/shop/cart.py\", line 20, in add\n    parse_quantity(q)\n  File \"/app/shop/parse.py\", line 5, in parse_quantity\n    raise ValueError(...)\nValueError: invalid quantity 3\n";
        assert_eq!(
            top_frames(py),
            vec!["parse.py:parse_quantity", "cart.py:add", "cart.py:checkout"]
        );
        let java = "java.lang.IllegalStateException: boom\n\tat com.shop.Cart.add(Cart.java:42)\n\tat com.shop.Api.post(Api.java:7)\n";
        assert_eq!(
            top_frames(java),
            vec!["Cart.java:com.shop.Cart.add", "Api.java:com.shop.Api.post"]
        );
        let js = "TypeError: x is undefined\n    at parse (/srv/app/parse.js:3:9)\n    at main (/srv/app/index.js:10:1)";
        assert_eq!(top_frames(js), vec!["parse.js:parse", "index.js:main"]);
    }

    #[test]
    fn the_same_failure_groups_together_and_another_place_apart() {
        let at = |func: &str, line: u32| format!("  File \"/a/p.py\", line {line}, in {func}\n");
        let a = group("ValueError", "bad 1", &at("parse", 5));
        let b = group("ValueError", "bad 22", &at("parse", 9));
        let c = group("ValueError", "bad 1", &at("price", 5));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_ne!(
            a.fingerprint,
            group("KeyError", "bad 1", &at("parse", 5)).fingerprint
        );
    }
}
