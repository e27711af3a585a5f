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

/// Checks an action's strings and parentheses.
fn tokens(s: &str) -> Result<(), String> {
    let mut parens = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '`' | '\'' => quote = Some(c),
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
    if quote.is_some() {
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
    }
}
