//! LogQL text → tokens, each with its byte offset (for "parse error at line L, col C").

use super::error::ParseError;

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: label, keyword or function.
    Ident(String),
    /// A quoted (`"..."`, Go escapes) or raw (`` `...` ``) string, unquoted.
    Str(String),
    /// A number.
    Num(f64),
    /// A duration such as `5m` or `1h30m`, in ns.
    Duration(i64),
    /// A size such as `20KB` or `1.5MiB`, in bytes.
    Bytes(f64),
    /// Punctuation and operators: `{ } ( ) [ ] , | = != =~ !~ |= |~ == > >= < <= + - * / % ^`.
    Op(&'static str),
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    /// The token.
    pub tok: Tok,
    /// Byte offset in the query.
    pub at: usize,
}

const OPS: [&str; 25] = [
    "!=", "=~", "!~", "|=", "|~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",", "|", "=",
    ">", "<", "+", "-", "*", "/", "%", "^",
];

/// Splits `q` into tokens.
pub fn lex(q: &str) -> Result<Vec<Spanned>, ParseError> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let at = i;
        if c == b'"' || c == b'`' {
            let (s, next) = string(q, i)?;
            out.push(Spanned {
                tok: Tok::Str(s),
                at,
            });
            i = next;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                j += 1;
            }
            let text = &q[i..j];
            let tok = if let Ok(n) = text.parse::<f64>() {
                Tok::Num(n)
            } else if let Some(ns) = parse_duration(text) {
                Tok::Duration(ns)
            } else if let Some(b) = parse_bytes(text) {
                Tok::Bytes(b)
            } else {
                return Err(ParseError::at(
                    q,
                    at,
                    format!("invalid number, duration or size {text:?}"),
                ));
            };
            out.push(Spanned { tok, at });
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            out.push(Spanned {
                tok: Tok::Ident(q[i..j].to_string()),
                at,
            });
            i = j;
            continue;
        }
        match OPS.iter().find(|op| q[i..].starts_with(**op)) {
            Some(op) => {
                out.push(Spanned {
                    tok: Tok::Op(op),
                    at,
                });
                i += op.len();
            }
            None => {
                let ch = q[i..].chars().next().unwrap_or('?');
                return Err(ParseError::at(
                    q,
                    at,
                    format!("unexpected character {ch:?}"),
                ));
            }
        }
    }
    Ok(out)
}

/// A quoted string starting at `start`: its value and the offset after it.
fn string(q: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = q.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = q[start + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        if c == quote {
            return Ok((out, start + 1 + k + 1));
        }
        if c != '\\' || quote == '`' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            'u' => {
                let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| ParseError::at(q, start, format!("invalid escape \\u{hex}")))?;
                out.push(ch);
            }
            other => {
                return Err(ParseError::at(
                    q,
                    start,
                    format!(
                        "invalid escape sequence \\{other} in string (write \\\\ for a backslash)"
                    ),
                ));
            }
        }
    }
    Err(ParseError::at(q, start, "unterminated string"))
}

/// A Prometheus/Go duration (`5m`, `1h30m`, `250ms`, `1.5s`) in ns.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "y" => 31_536_000e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * unit;
    }
    Some(total.round() as i64)
}

/// A size as go-humanize reads it (`42`, `42B`, `20KB` = 20,000, `1.5KiB` = 1,536; the
/// unit's case does not matter), in bytes.
pub fn parse_bytes(text: &str) -> Option<f64> {
    let n = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..n].parse().ok()?;
    let unit = text[n..].trim().to_ascii_lowercase();
    let pow = |base: f64, e: i32| base.powi(e);
    let mult = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => pow(1000.0, 1),
        "ki" | "kib" => pow(1024.0, 1),
        "m" | "mb" => pow(1000.0, 2),
        "mi" | "mib" => pow(1024.0, 2),
        "g" | "gb" => pow(1000.0, 3),
        "gi" | "gib" => pow(1024.0, 3),
        "t" | "tb" => pow(1000.0, 4),
        "ti" | "tib" => pow(1024.0, 4),
        "p" | "pb" => pow(1000.0, 5),
        "pi" | "pib" => pow(1024.0, 5),
        _ => return None,
    };
    Some(value * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(q: &str) -> Vec<Tok> {
        lex(q).unwrap().into_iter().map(|s| s.tok).collect()
    }

    #[test]
    fn tokens_of_a_query() {
        assert_eq!(
            toks(r#"rate({a=~"x\"y"} |= `c:\d` [1m30s]) > 0.5"#),
            vec![
                Tok::Ident("rate".into()),
                Tok::Op("("),
                Tok::Op("{"),
                Tok::Ident("a".into()),
                Tok::Op("=~"),
                Tok::Str("x\"y".into()),
                Tok::Op("}"),
                Tok::Op("|="),
                Tok::Str(r"c:\d".into()),
                Tok::Op("["),
                Tok::Duration(90_000_000_000),
                Tok::Op("]"),
                Tok::Op(")"),
                Tok::Op(">"),
                Tok::Num(0.5),
            ]
        );
    }

    #[test]
    fn durations_and_bad_input() {
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("1h2m"), Some(3_720_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_bytes("20KB"), Some(20_000.0));
        assert_eq!(parse_bytes("1.5KiB"), Some(1536.0));
        assert_eq!(parse_bytes("3mib"), Some(3.0 * 1024.0 * 1024.0));
        assert_eq!(parse_bytes("12"), Some(12.0));
        assert_eq!(parse_bytes("5x"), None);
        assert_eq!(lex("20KB").unwrap()[0].tok, Tok::Bytes(20_000.0));
        assert!(
            lex(r#"{a="x}"#)
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        assert!(lex("{a=`x`} # b").is_err());
    }
}
