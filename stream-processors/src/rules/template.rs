//! The syntax check of alert label and annotation templates: Go `text/template` actions as
//! Prometheus parses them (`{{ $labels.job }}`, `{{ $value | humanize }}`,
//! `{{ if gt $value 1.0 }}…{{ end }}`). Checked here: every action is closed, quoted strings
//! and parentheses are balanced, and `if`/`range`/`with`/`define`/`block` have their
//! `end`. Errors read as Go's (`template: NAME:LINE: unclosed action`).

/// Checks `text`, a template named `name` (Prometheus names them `__alert_<alert>`).
pub fn check(name: &str, text: &str) -> Result<(), String> {
    let err = |line: usize, msg: &str| Err(format!("template: {name}:{line}: {msg}"));
    let mut depth: Vec<usize> = Vec::new(); // lines of the open control structures
    let mut rest = text;
    let mut line = 1;
    while let Some(open) = rest.find("{{") {
        line += rest[..open].matches('\n').count();
        let start_line = line;
        let body_start = open + 2;
        let Some(body_len) = action_len(&rest[body_start..]) else {
            return err(start_line, "unclosed action");
        };
        let body = &rest[body_start..body_start + body_len];
        line += body.matches('\n').count();
        let inner = body.trim_start_matches('-').trim_end_matches('-').trim();
        if !inner.starts_with("/*") {
            if let Err(msg) = tokens(inner) {
                return err(start_line, &msg);
            }
            if let Some(f) = unknown_function(inner) {
                return err(start_line, &format!("function {f:?} not defined"));
            }
            match inner.split_whitespace().next().unwrap_or("") {
                "if" | "range" | "with" | "define" | "block" => depth.push(start_line),
                "end" => {
                    let Some(_) = depth.pop() else {
                        return err(start_line, "unexpected {{end}}");
                    };
                }
                "else" if depth.is_empty() => return err(start_line, "unexpected {{else}}"),
                "" => return err(start_line, "missing value for command"),
                _ => {}
            }
        }
        rest = &rest[body_start + body_len + 2..];
    }
    match depth.last() {
        Some(_) => err(line + rest.matches('\n').count(), "unexpected EOF"),
        None => Ok(()),
    }
}

/// Length of an action's body up to its closing `}}` (quoted `}}` do not close it).
pub(crate) fn action_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' && q != b'`' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => match b[i] {
                b'"' | b'`' | b'\'' => quote = Some(b[i]),
                b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// Functions a Prometheus template may call: Go's builtins and Prometheus's own.
pub const FUNCTIONS: &[&str] = &[
    // text/template
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    // Prometheus (template/template.go)
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
];

const KEYWORDS: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
    "nil", "true", "false",
];

/// The first bare identifier of an action that is no keyword and no known function (in Go
/// templates a bare identifier can only be a function name).
fn unknown_function(s: &str) -> Option<String> {
    let mut quotes = Quotes::default();
    let mut word = String::new();
    let mut prev = ' ';
    let mut words = Vec::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if quotes.inside(c) {
            prev = c;
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            if word.is_empty() {
                // Fields (`.x`), variables (`$x`) and numbers are not function names.
                word.push(if prev == '.' || prev == '$' { '.' } else { c });
                if prev == '.' || prev == '$' {
                    word.push(c);
                }
            } else {
                word.push(c);
            }
        } else {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        }
        prev = c;
    }
    words
        .into_iter()
        .filter(|w| !w.starts_with('.') && !w.starts_with(|c: char| c.is_ascii_digit()))
        .find(|w| !KEYWORDS.contains(&w.as_str()) && !FUNCTIONS.contains(&w.as_str()))
}

/// Where a scan of an action is relative to its quoted strings.
#[derive(Default)]
struct Quotes {
    open: Option<char>,
    escaped: bool,
}

impl Quotes {
    /// Feeds `c`; true while `c` is part of a quoted string (its quotes included).
    fn inside(&mut self, c: char) -> bool {
        match self.open {
            Some(q) => {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' && q != '`' {
                    self.escaped = true;
                } else if c == q {
                    self.open = None;
                }
                true
            }
            None if matches!(c, '"' | '`' | '\'') => {
                self.open = Some(c);
                true
            }
            None => false,
        }
    }
}

/// Checks an action's strings and parentheses.
fn tokens(s: &str) -> Result<(), String> {
    let mut parens = 0i32;
    let mut quotes = Quotes::default();
    for c in s.chars() {
        if quotes.inside(c) {
            continue;
        }
        match c {
            '(' => parens += 1,
            ')' => {
                parens -= 1;
                if parens < 0 {
                    return Err("unexpected right paren".into());
                }
            }
            _ => {}
        }
    }
    if quotes.open.is_some() {
        return Err("unterminated quoted string".into());
    }
    if parens > 0 {
        return Err("unclosed left paren".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn prometheus_templates_pass() {
        for t in [
            "Instance {{ $labels.instance }} down",
            "{{ $value | humanize }} {{ printf \"%.2f\" $value }}",
            "{{ if gt $value 1.0 }}high{{ else }}low{{ end }}",
            "{{- range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end -}}",
            "{{/* a comment }} */}}plain",
            "{{ \"}}\" }}",
            "no actions",
        ] {
            assert_eq!(check("t", t), Ok(()), "{t}");
        }
    }

    #[test]
    fn broken_templates_say_why_as_go_does() {
        let e = |t: &str| check("__alert_Z", t).unwrap_err();
        assert_eq!(
            e("{{ $labels.job "),
            "template: __alert_Z:1: unclosed action"
        );
        assert_eq!(
            e("a\n{{ if true }}x"),
            "template: __alert_Z:2: unexpected EOF"
        );
        assert_eq!(e("{{ end }}"), "template: __alert_Z:1: unexpected {{end}}");
        assert_eq!(
            e("{{ printf \"x }}\n"),
            "template: __alert_Z:1: unclosed action"
        );
        assert_eq!(
            e("{{ (len $labels }}"),
            "template: __alert_Z:1: unclosed left paren"
        );
        assert_eq!(
            e("{{ $value | humanise }}"),
            "template: __alert_Z:1: function \"humanise\" not defined"
        );
        assert_eq!(
            check(
                "t",
                "{{ $labels.humanise }} {{ .Value }} {{ 1.5e3 }} {{ \"nosuch\" }}"
            ),
            Ok(())
        );
    }
}
