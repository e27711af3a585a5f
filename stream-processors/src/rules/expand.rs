//! Alert label and annotation templates expanded as Prometheus expands them: Go
//! `text/template` (the `gotmpl` crate) with `$labels`, `$externalLabels`, `$externalURL`
//! and `$value` defined, `missingkey=zero`, and Prometheus's template functions
//! (`humanize*`, `query`, `first`, `value`, `label`, `reReplaceAll`, `match`, `title`,
//! `toUpper`, `toLower`, `stripPort`, `stripDomain`, `graphLink`, `tableLink`, `args`,
//! `safeHtml`, `parseDuration`, `externalURL`, `pathPrefix`, `sortByLabel`, `strvalue`,
//! `toTime`).
//!
//! Two adaptations make `gotmpl`'s output Go's: every printing action is piped through a
//! printer that formats floats as Go's `%v` does (`1e+06`, `+Inf`) and prints a missing
//! label as the empty string (Prometheus's label maps are `map[string]string`, whose zero
//! value is `""`); `eq`/`ne` compare a missing label as `""` for the same reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{MissingKey, Template, TemplateError, Value};
use obs_promql::Labels;
use obs_promql::value::Decimal;

/// Runs an instant query at the evaluation time for the `query` template function.
pub type QueryFn = Arc<dyn Fn(&str) -> Result<Vec<(Labels, f64)>, String> + Send + Sync>;

/// What a template sees.
pub struct Data<'a> {
    /// The alert's series labels (`$labels`).
    pub labels: &'a Labels,
    /// External labels (`$externalLabels`).
    pub external_labels: &'a Labels,
    /// The external URL (`$externalURL`).
    pub external_url: &'a str,
    /// The alert's value (`$value`).
    pub value: f64,
}

const DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";
const PRINT: &str = "__obs_print";

/// Expands `text` as the template `name` (Prometheus names alert templates
/// `__alert_<alertname>`); the error reads as Prometheus's.
pub fn expand(
    name: &str,
    text: &str,
    data: &Data,
    query: Option<QueryFn>,
) -> Result<String, String> {
    let source = format!("{DEFS}{}", pipe_prints(text));
    let tmpl = functions(Template::new(name), data.external_url, query)
        .missing_key(MissingKey::ZeroValue)
        .parse(&source)
        .map_err(|e| format!("error parsing template {name}: {e}"))?;
    let value = Value::Map(Arc::new(BTreeMap::from([
        ("Labels".into(), string_map(data.labels)),
        ("ExternalLabels".into(), string_map(data.external_labels)),
        (
            "ExternalURL".into(),
            Value::String(data.external_url.into()),
        ),
        ("Value".into(), Value::Float(data.value)),
    ])));
    tmpl.execute_to_string(&value)
        .map_err(|e| format!("error executing template {name}: {e}"))
}

fn string_map(l: &Labels) -> Value {
    Value::Map(Arc::new(
        l.iter()
            .map(|(k, v)| (Arc::from(k.as_str()), Value::String(v.as_str().into())))
            .collect(),
    ))
}

/// Rewrites every action that prints (`{{ pipeline }}`) to `{{ pipeline | __obs_print }}`;
/// control actions, declarations and comments are left as they are.
fn pipe_prints(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(len) = super::template::action_len(after) else {
            // Unclosed: left for the parser to report.
            out.push_str(&rest[open..]);
            return out;
        };
        let body = &after[..len];
        let lead = body.len() - body.trim_start_matches('-').len();
        let lead = if lead == 1 && body[1..].starts_with(char::is_whitespace) {
            1
        } else {
            0
        };
        let trail = if body.ends_with('-') && body[..body.len() - 1].ends_with(char::is_whitespace)
        {
            1
        } else {
            0
        };
        let inner = &body[lead..body.len() - trail];
        out.push_str("{{");
        if prints(inner.trim()) {
            out.push_str(&body[..lead]);
            out.push('(');
            out.push_str(inner);
            out.push_str(") | ");
            out.push_str(PRINT);
            out.push(' ');
            out.push_str(&body[body.len() - trail..]);
        } else {
            out.push_str(body);
        }
        out.push_str("}}");
        rest = &after[len + 2..];
    }
    out.push_str(rest);
    out
}

/// Whether an action's body prints its value.
fn prints(inner: &str) -> bool {
    if inner.is_empty() || inner.starts_with("/*") {
        return false;
    }
    let first = inner.split_whitespace().next().unwrap_or("");
    if matches!(
        first,
        "if" | "else"
            | "end"
            | "range"
            | "with"
            | "define"
            | "template"
            | "block"
            | "break"
            | "continue"
    ) {
        return false;
    }
    // `$x := …` and `$x = …` declare or assign without printing.
    let mut words = inner.split_whitespace();
    let w0 = words.next().unwrap_or("");
    let w1 = words.next().unwrap_or("");
    !(w0.starts_with('$') && (w1 == ":=" || w1 == "=" || w0.ends_with(',')))
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

fn functions(t: Template, external_url: &str, query: Option<QueryFn>) -> Template {
    let url = external_url.to_string();
    let prefix = url::path_of(external_url);
    t.func(PRINT, |a| {
        Ok(Value::String(
            go_print(a.first().unwrap_or(&Value::Nil)).into(),
        ))
    })
    .func("eq", |a| compare_eq(a).map(Value::Bool))
    .func("ne", |a| compare_eq(a).map(|b| Value::Bool(!b)))
    .func("humanize", |a| str1(a, "humanize", |v| Ok(humanize(v))))
    .func("humanize1024", |a| {
        str1(a, "humanize1024", |v| Ok(humanize1024(v)))
    })
    .func("humanizeDuration", |a| {
        str1(a, "humanizeDuration", |v| Ok(humanize_duration(v)))
    })
    .func("humanizePercentage", |a| {
        str1(a, "humanizePercentage", |v| {
            Ok(format!("{}%", go_g(v * 100.0, Some(4))))
        })
    })
    .func("humanizeTimestamp", |a| {
        str1(a, "humanizeTimestamp", humanize_timestamp)
    })
    .func("toTime", |a| str1(a, "toTime", humanize_timestamp))
    .func("parseDuration", |a| {
        let s = string_arg(a, 0, "parseDuration")?;
        super::file::parse_duration(&s)
            .map(|d| Value::Float(d.as_secs_f64()))
            .map_err(err)
    })
    .func("title", |a| {
        Ok(Value::String(title(&string_arg(a, 0, "title")?).into()))
    })
    .func("toUpper", |a| {
        Ok(Value::String(
            string_arg(a, 0, "toUpper")?.to_uppercase().into(),
        ))
    })
    .func("toLower", |a| {
        Ok(Value::String(
            string_arg(a, 0, "toLower")?.to_lowercase().into(),
        ))
    })
    .func("match", |a| {
        let re = regex(&string_arg(a, 0, "match")?, false)?;
        Ok(Value::Bool(re.is_match(&string_arg(a, 1, "match")?)))
    })
    .func("reReplaceAll", |a| {
        let re = regex(&string_arg(a, 0, "reReplaceAll")?, true)?;
        let repl = string_arg(a, 1, "reReplaceAll")?;
        let text = string_arg(a, 2, "reReplaceAll")?;
        Ok(Value::String(
            re.replace_all(&text, repl.as_str()).into_owned().into(),
        ))
    })
    .func("safeHtml", |a| {
        Ok(Value::String(string_arg(a, 0, "safeHtml")?.into()))
    })
    .func("stripPort", |a| {
        Ok(Value::String(
            strip_port(&string_arg(a, 0, "stripPort")?).into(),
        ))
    })
    .func("stripDomain", |a| {
        Ok(Value::String(
            strip_domain(&string_arg(a, 0, "stripDomain")?).into(),
        ))
    })
    .func("graphLink", |a| {
        let e = string_arg(a, 0, "graphLink")?;
        Ok(Value::String(
            format!("/graph?g0.expr={}&g0.tab=0", gotmpl::url_encode(&e)).into(),
        ))
    })
    .func("tableLink", |a| {
        let e = string_arg(a, 0, "tableLink")?;
        Ok(Value::String(
            format!("/graph?g0.expr={}&g0.tab=1", gotmpl::url_encode(&e)).into(),
        ))
    })
    .func("args", |a| {
        Ok(Value::Map(Arc::new(
            a.iter()
                .enumerate()
                .map(|(i, v)| (Arc::from(format!("arg{i}").as_str()), v.clone()))
                .collect(),
        )))
    })
    .func("externalURL", move |_| {
        Ok(Value::String(url.as_str().into()))
    })
    .func("pathPrefix", move |_| {
        Ok(Value::String(prefix.as_str().into()))
    })
    .func("query", move |a| {
        let q = string_arg(a, 0, "query")?;
        let Some(query) = &query else {
            return Err(err("query is not available here"));
        };
        let rows = query(&q).map_err(err)?;
        Ok(Value::List(
            rows.into_iter().map(|(l, v)| sample(&l, v)).collect(),
        ))
    })
    .func("first", |a| match a.first() {
        Some(Value::List(l)) if !l.is_empty() => Ok(l[0].clone()),
        Some(Value::List(_)) => Err(err("first() called on vector with no elements")),
        _ => Err(err("first() wants a query result")),
    })
    .func("label", |a| {
        let name = string_arg(a, 0, "label")?;
        Ok(sample_field(a.get(1), "Labels")
            .and_then(|l| l.field(&name).cloned())
            .unwrap_or(Value::String("".into())))
    })
    .func("value", |a| {
        Ok(sample_field(a.first(), "Value")
            .cloned()
            .unwrap_or(Value::Nil))
    })
    .func("strvalue", |a| {
        Ok(sample_field(a.first(), "Labels")
            .and_then(|l| l.field("__value__").cloned())
            .unwrap_or(Value::String("".into())))
    })
    .func("sortByLabel", |a| {
        let name = string_arg(a, 0, "sortByLabel")?;
        let Some(Value::List(l)) = a.get(1) else {
            return Err(err("sortByLabel wants a query result"));
        };
        let mut v: Vec<Value> = l.to_vec();
        let key = |s: &Value| {
            sample_field(Some(s), "Labels")
                .and_then(|l| l.field(&name).map(ToString::to_string))
                .unwrap_or_default()
        };
        v.sort_by_key(key);
        Ok(Value::List(v.into()))
    })
}

/// A query result's sample as templates see it: `.Labels` and `.Value`.
fn sample(l: &Labels, v: f64) -> Value {
    Value::Map(Arc::new(BTreeMap::from([
        ("Labels".into(), string_map(l)),
        ("Value".into(), Value::Float(v)),
    ])))
}

fn sample_field<'a>(s: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    s.and_then(|s| s.field(name))
}

fn string_arg(a: &[Value], i: usize, f: &str) -> Result<String, TemplateError> {
    match a.get(i) {
        Some(Value::String(s)) => Ok(s.to_string()),
        Some(Value::Nil) => Ok(String::new()),
        Some(v) => Ok(go_print(v)),
        None => Err(err(format!(
            "wrong number of args for {f}: want {}, got {}",
            i + 1,
            a.len()
        ))),
    }
}

fn str1(
    a: &[Value],
    f: &str,
    op: impl Fn(f64) -> Result<String, String>,
) -> Result<Value, TemplateError> {
    let v = match a.first() {
        Some(Value::Float(v)) => *v,
        Some(Value::Int(v)) => *v as f64,
        Some(Value::Uint(v)) => *v as f64,
        Some(Value::String(s)) => s.parse::<f64>().map_err(|e| {
            err(format!(
                "error calling {f}: strconv.ParseFloat: parsing {s:?}: {e}"
            ))
        })?,
        Some(v) => {
            return Err(err(format!(
                "error calling {f}: can't convert {} to float",
                v.type_name()
            )));
        }
        None => return Err(err(format!("wrong number of args for {f}: want 1 got 0"))),
    };
    op(v)
        .map(|s| Value::String(s.into()))
        .map_err(|e| err(format!("error calling {f}: {e}")))
}

fn regex(pattern: &str, must: bool) -> Result<regex::Regex, TemplateError> {
    regex::Regex::new(pattern).map_err(|e| {
        if must {
            err(format!("regexp: Compile({pattern:?}): {e}"))
        } else {
            err(format!("error calling match: {e}"))
        }
    })
}

/// Go's `eq` for one or more comparands, with a missing label equal to `""`.
fn compare_eq(a: &[Value]) -> Result<bool, TemplateError> {
    let norm = |v: &Value| match v {
        Value::Nil => Value::String("".into()),
        v => v.clone(),
    };
    let Some(first) = a.first().map(norm) else {
        return Err(err("missing argument for comparison"));
    };
    if a.len() < 2 {
        return Err(err("missing argument for comparison"));
    }
    for other in a[1..].iter().map(norm) {
        let same = match (&first, &other) {
            (Value::String(x), Value::String(y)) => x == y,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Float(x), Value::Float(y)) => x == y,
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Uint(x), Value::Uint(y)) => x == y,
            (Value::Int(x), Value::Uint(y)) | (Value::Uint(y), Value::Int(x)) => {
                *x >= 0 && *x as u64 == *y
            }
            (x, y) => {
                return Err(err(format!(
                    "error calling eq: incompatible types for comparison: {} and {}",
                    x.type_name(),
                    y.type_name()
                )));
            }
        };
        if same {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Prints a value as Go's `fmt.Sprint` does for the types templates see.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Nil => String::new(),
        Value::Float(f) => go_g(*f, None),
        Value::List(l) => format!("[{}]", l.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Map(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        v => v.to_string(),
    }
}

/// How Go prints NaN and the infinities (`None` for finite numbers).
pub fn go_non_finite(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        None
    }
}

/// Go's `strconv.FormatFloat(v, 'e' or 'E', -1, 64)` (the shortest exponent form).
pub fn go_exp(v: f64, letter: char) -> String {
    let Some(d) = Decimal::new(v) else {
        return go_non_finite(v).unwrap_or_default().into();
    };
    let mut out = String::new();
    d.exponential(&mut out, letter);
    out
}

/// Go's `%g` (`prec` significant digits) or `%v` (`None`: shortest) for a float64.
pub fn go_g(v: f64, prec: Option<usize>) -> String {
    if let Some(s) = go_non_finite(v) {
        return s.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Significant digits and decimal exponent, rounded as Go rounds them.
    let (digits, exp) = match prec {
        Some(p) => {
            let sci = format!("{:.*e}", p.max(1) - 1, v.abs());
            let (mantissa, exp) = sci.split_once('e').expect("exponent");
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            (digits, exp.parse::<i32>().expect("exponent digits"))
        }
        None => {
            let d = Decimal::new(v).expect("finite");
            (d.digits().to_string(), d.exponent())
        }
    };
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let eprec = match prec {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > nd && nd >= dp { nd } else { p }
        }
    };
    let sign = if v < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{head}{frac}e{esign}{:02}", exp.abs());
    }
    // Plain notation with exactly the significant digits.
    let s = if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        format!("{}.{}", &digits[..dp as usize], &digits[dp as usize..])
    };
    format!("{sign}{s}")
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_g(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        (v, prefix) = scale_up(v);
    }
    format!("{}{prefix}", go_g(v, Some(4)))
}

/// A magnitude below 1 scaled by 1000s up to at least 1, with its SI prefix.
fn scale_up(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return go_g(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, Some(4)))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let d = v.abs() as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        return if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", go_g(v.abs(), Some(4)))
        };
    }
    let (v, prefix) = scale_up(v);
    format!("{}{prefix}s", go_g(v, Some(4)))
}

/// Go's `time.Time.String()` of a Unix time in seconds, in UTC.
fn humanize_timestamp(v: f64) -> Result<String, String> {
    if v.is_nan() || v.is_infinite() {
        return Ok(go_g(v, Some(4)));
    }
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            go_g(v, None)
        ));
    }
    // Prometheus keeps millisecond precision (model.TimeFromUnixNano).
    let ms = (ns as i64) / 1_000_000;
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| format!("{v} is out of the range of times"))?;
    let nanos = ms.rem_euclid(1000) as u32 * 1_000_000;
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    Ok(format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S")))
}

/// Go's `strings.Title`: the first letter of every word upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

fn strip_port(s: &str) -> String {
    split_host_port(s).map_or(s, |(h, _)| h).to_string()
}

fn strip_domain(s: &str) -> String {
    let (host, port) = split_host_port(s).unwrap_or((s, ""));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return s.to_string();
    }
    let host = host.split('.').next().unwrap_or("");
    if port.is_empty() {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

mod url {
    /// The path part of a URL (`pathPrefix`).
    pub fn path_of(u: &str) -> String {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        match rest.find('/') {
            Some(i) => rest[i..].split(['?', '#']).next().unwrap_or("").to_string(),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, value: f64) -> Result<String, String> {
        let labels: Labels = [("job", "api"), ("instance", "db1.example.com:9100")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ext: Labels = [("cluster".to_string(), "eu1".to_string())].into();
        let data = Data {
            labels: &labels,
            external_labels: &ext,
            external_url: "http://obs.example:9090/prefix",
            value,
        };
        expand("__alert_T", text, &data, None)
    }

    #[test]
    // The ties are written out exactly: their last digits are the point.
    #[allow(clippy::excessive_precision)]
    fn floats_print_as_go_prints_them() {
        for (v, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (-2.5, "-2.5"),
            // Half-way between two shortest decimals: Go takes the even last digit.
            (2115347345748811.25, "2.1153473457488112e+15"),
            (233115890514796.125, "2.3311589051479612e+14"),
        ] {
            assert_eq!(go_g(v, None), want, "{v}");
        }
        assert_eq!(go_exp(2115347345748811.25, 'e'), "2.1153473457488112e+15");
        assert_eq!(go_exp(-0.0, 'E'), "-0E+00");
        assert_eq!(go_g(12345.0, Some(4)), "1.234e+04");
        assert_eq!(go_g(100.0, Some(4)), "100");
        assert_eq!(go_g(1.5, Some(4)), "1.5");
        assert_eq!(go_g(0.000123456, Some(4)), "0.0001235");
    }

    #[test]
    fn prometheus_variables_and_functions() {
        assert_eq!(
            run("{{ $labels.job }} is {{ $value }}", 1e6).unwrap(),
            "api is 1e+06"
        );
        assert_eq!(run("[{{ $labels.missing }}]", 1.0).unwrap(), "[]");
        assert_eq!(
            run(r#"{{ if eq $labels.missing "" }}none{{ end }}"#, 1.0).unwrap(),
            "none"
        );
        assert_eq!(run("{{ $externalLabels.cluster }}", 1.0).unwrap(), "eu1");
        assert_eq!(run("{{ $value | humanize }}", 1234567.0).unwrap(), "1.235M");
        assert_eq!(run("{{ $value | humanize }}", 0.001234).unwrap(), "1.234m");
        assert_eq!(run("{{ humanize1024 $value }}", 1048576.0).unwrap(), "1Mi");
        assert_eq!(
            run("{{ humanizeDuration $value }}", 90061.0).unwrap(),
            "1d 1h 1m 1s"
        );
        assert_eq!(run("{{ humanizeDuration $value }}", 0.25).unwrap(), "250ms");
        assert_eq!(
            run("{{ humanizePercentage $value }}", 0.1234).unwrap(),
            "12.34%"
        );
        assert_eq!(
            run("{{ humanizeTimestamp $value }}", 1435065584.128).unwrap(),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(
            run(r#"{{ printf "%.2f" $value }}"#, 12.345678).unwrap(),
            "12.35"
        );
        assert_eq!(
            run("{{ $labels.instance | stripPort }}", 1.0).unwrap(),
            "db1.example.com"
        );
        assert_eq!(
            run("{{ $labels.instance | stripDomain }}", 1.0).unwrap(),
            "db1:9100"
        );
        assert_eq!(
            run(
                r#"{{ reReplaceAll "(.*)\\.example.*" "$1" $labels.instance }}"#,
                1.0
            )
            .unwrap(),
            "db1"
        );
        assert_eq!(
            run(r#"{{ "hello world" | title }}"#, 1.0).unwrap(),
            "Hello World"
        );
        assert_eq!(run("{{ pathPrefix }}", 1.0).unwrap(), "/prefix");
        assert_eq!(
            run("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 2.0).unwrap(),
            "high"
        );
        assert_eq!(run("{{- $x := 3 -}} {{ $x }}", 2.0).unwrap(), "3");
    }

    #[test]
    fn failures_name_the_template() {
        let e = run("{{ if gt $value 1 }}x{{ end }}", 2.0).unwrap_err();
        assert!(e.starts_with("error executing template __alert_T:"), "{e}");
        assert!(e.contains("incompatible types for comparison"), "{e}");
        let e = run("{{ humanize \"abc\" }}", 2.0).unwrap_err();
        assert!(e.contains("humanize"), "{e}");
        let e = run("{{ query \"up\" }}", 2.0).unwrap_err();
        assert!(e.contains("query"), "{e}");
    }

    #[test]
    fn query_results_reach_templates() {
        let labels = Labels::new();
        let data = Data {
            labels: &labels,
            external_labels: &labels,
            external_url: "",
            value: 0.0,
        };
        let q: QueryFn = Arc::new(|q: &str| {
            assert_eq!(q, "up");
            Ok(vec![(
                [("instance".to_string(), "a".to_string())].into(),
                1.0,
            )])
        });
        let out = expand(
            "t",
            r#"{{ with query "up" }}{{ . | first | value }} {{ range . }}{{ .Labels.instance }}{{ end }}{{ end }}"#,
            &data,
            Some(q),
        )
        .unwrap();
        assert_eq!(out, "1 a");
    }
}
