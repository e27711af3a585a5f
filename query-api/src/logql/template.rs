//! The Go-template subset `line_format` and `label_format` take: text with `{{ ... }}`
//! actions (`{{- -}}` trim the whitespace beside them); an action is a pipeline of
//! commands (`{{ .path | upper }}`, `{{ trimPrefix "/api" .path }}`); arguments are `.label`
//! (empty when missing), `"string"` and `__line__`. Functions: `upper`/`ToUpper`,
//! `lower`/`ToLower`, `trim`/`TrimSpace`, `trimPrefix`, `trimSuffix`, `replace`, `default`.
//! Anything else is refused when the query is parsed.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Label(String),
    Text(String),
    Line,
}

#[derive(Debug, Clone, PartialEq)]
struct Command {
    func: Option<&'static str>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(Vec<Command>),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Functions and how many arguments each takes (the piped value counts as the last).
const FUNCS: [(&str, usize); 11] = [
    ("upper", 1),
    ("ToUpper", 1),
    ("lower", 1),
    ("ToLower", 1),
    ("trim", 1),
    ("TrimSpace", 1),
    ("title", 1),
    ("trimPrefix", 2),
    ("trimSuffix", 2),
    ("replace", 3),
    ("default", 2),
];

impl Template {
    /// Compiles `t`.
    pub fn new(t: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            let mut inner = &rest[open + 2..];
            if let Some(s) = inner.strip_prefix('-') {
                text = text.trim_end();
                inner = s;
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_string()));
            }
            let close = inner
                .find("}}")
                .ok_or_else(|| format!("invalid template {t:?}: unclosed action"))?;
            let mut action = &inner[..close];
            rest = &inner[close + 2..];
            if let Some(a) = action.strip_suffix('-') {
                action = a;
                rest = rest.trim_start();
            }
            pieces.push(Piece::Action(
                pipeline(action).map_err(|e| format!("invalid template {t:?}: {e}"))?,
            ));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// The text for these labels and line.
    pub fn render(&self, labels: &BTreeMap<String, String>, line: &str) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(cmds) => {
                    let mut piped: Option<String> = None;
                    for c in cmds {
                        let mut args: Vec<String> = c
                            .args
                            .iter()
                            .map(|a| match a {
                                Arg::Label(n) => labels.get(n).cloned().unwrap_or_default(),
                                Arg::Text(s) => s.clone(),
                                Arg::Line => line.to_string(),
                            })
                            .collect();
                        if let Some(v) = piped.take() {
                            args.push(v);
                        }
                        piped = Some(call(c.func, args));
                    }
                    out.push_str(&piped.unwrap_or_default());
                }
            }
        }
        out
    }
}

fn call(func: Option<&str>, a: Vec<String>) -> String {
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    match func {
        None => arg(0),
        Some("upper" | "ToUpper") => arg(0).to_uppercase(),
        Some("lower" | "ToLower") => arg(0).to_lowercase(),
        Some("trim" | "TrimSpace") => arg(0).trim().to_string(),
        Some("title") => {
            let mut out = String::new();
            let mut start = true;
            for c in arg(0).chars() {
                if start {
                    out.extend(c.to_uppercase())
                } else {
                    out.push(c)
                }
                start = !c.is_alphanumeric();
            }
            out
        }
        Some("trimPrefix") => {
            let s = arg(1);
            s.strip_prefix(arg(0).as_str())
                .map(str::to_string)
                .unwrap_or(s)
        }
        Some("trimSuffix") => {
            let s = arg(1);
            s.strip_suffix(arg(0).as_str())
                .map(str::to_string)
                .unwrap_or(s)
        }
        Some("replace") => arg(2).replace(&arg(0), &arg(1)),
        Some("default") => {
            let v = arg(1);
            if v.is_empty() { arg(0) } else { v }
        }
        Some(_) => String::new(),
    }
}

fn pipeline(action: &str) -> Result<Vec<Command>, String> {
    let words = split_words(action)?;
    let mut cmds = Vec::new();
    for (i, cmd) in words.split(|w| w == "|").enumerate() {
        let Some(first) = cmd.first() else {
            return Err("empty command in action".into());
        };
        let arg_of = |w: &String| -> Result<Arg, String> {
            if let Some(n) = w.strip_prefix('.') {
                Ok(Arg::Label(n.to_string()))
            } else if let Some(s) = w.strip_prefix('\u{0}') {
                Ok(Arg::Text(s.to_string()))
            } else if w == "__line__" {
                Ok(Arg::Line)
            } else {
                Err(format!("function {w:?} not defined"))
            }
        };
        let (func, args) = match FUNCS.iter().find(|(f, _)| f == first) {
            Some((f, arity)) => {
                let args = cmd[1..].iter().map(arg_of).collect::<Result<Vec<_>, _>>()?;
                let given = args.len() + usize::from(i > 0);
                if given != *arity {
                    return Err(format!(
                        "wrong number of args for {f}: want {arity} got {given}"
                    ));
                }
                (Some(*f), args)
            }
            None => {
                if i > 0 || cmd.len() != 1 {
                    return Err(format!("function {first:?} not defined"));
                }
                (None, vec![arg_of(first)?])
            }
        };
        cmds.push(Command { func, args });
    }
    Ok(cmds)
}

/// Words of an action; string literals come back prefixed by NUL, `|` as its own word.
fn split_words(action: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut s = String::from('\u{0}');
            loop {
                match chars.next() {
                    None => return Err("unterminated string in action".into()),
                    Some(x) if x == c => break,
                    Some('\\') if c == '"' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(x) => s.push(x),
                        None => return Err("unterminated string in action".into()),
                    },
                    Some(x) => s.push(x),
                }
            }
            out.push(s);
        } else {
            let mut w = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() || x == '|' {
                    break;
                }
                w.push(x);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_functions_and_line() {
        let labels: BTreeMap<String, String> = [
            ("path".to_string(), "/api/users".to_string()),
            ("m".to_string(), "get".to_string()),
        ]
        .into();
        let t = Template::new(
            r#"{{ .m | upper }} {{trimPrefix "/api" .path}} [{{.missing}}] {{- " x " -}} ! {{ __line__ | len }}"#,
        );
        assert!(t.unwrap_err().contains("\"len\" not defined"));
        let t = Template::new(r#"{{ .m | upper }} {{trimPrefix "/api" .path}} [{{.missing}}] {{- default "none" .missing -}} ! {{__line__}}"#).unwrap();
        assert_eq!(t.render(&labels, "L"), "GET /users []none! L");
        assert!(Template::new("{{ .a ").is_err());
        assert!(Template::new("{{ upper }}").is_err());
    }
}
