//! Tail sampling with the OpenTelemetry Collector's `tail_sampling` policies, configured in
//! its YAML shape (`policies: [{name, type, <type>: {...}}]`) and decided when a trace is
//! decided: a `drop` policy that matches wins, else any policy that samples keeps the
//! trace, else it is not kept. No policies: every trace is kept.
//!
//! Semantics follow the Collector (v0.144 and later: `invert_match` gives a plain
//! decision). Two differences, both so that a restart decides exactly as the run before
//! it: `rate_limiting` and `composite` budgets run on the partition's event time rather
//! than the wall clock, and attribute values are the strings the pipeline keeps (a
//! `string_attribute` policy also sees numbers and booleans as their text).

use std::collections::{BTreeMap, HashSet};

use obs_schemas::records::Span;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What one policy says about a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it.
    Sampled,
    /// This policy does not keep it.
    NotSampled,
    /// Drop it, whatever other policies say.
    Dropped,
}

/// The file's shape: the Collector's `tail_sampling` block (its timing keys are read from
/// `[traces]` instead and rejected here so nobody believes they apply).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policies: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyConfig {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    latency: Option<LatencyCfg>,
    status_code: Option<StatusCodeCfg>,
    probabilistic: Option<ProbabilisticCfg>,
    string_attribute: Option<StringAttrCfg>,
    numeric_attribute: Option<NumericAttrCfg>,
    boolean_attribute: Option<BoolAttrCfg>,
    span_count: Option<SpanCountCfg>,
    rate_limiting: Option<RateLimitingCfg>,
    trace_state: Option<TraceStateCfg>,
    and: Option<AndCfg>,
    drop: Option<DropCfg>,
    composite: Option<CompositeCfg>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyCfg {
    threshold_ms: i64,
    #[serde(default)]
    upper_threshold_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusCodeCfg {
    status_codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbabilisticCfg {
    #[serde(default)]
    hash_salt: String,
    sampling_percentage: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StringAttrCfg {
    key: String,
    values: Vec<String>,
    #[serde(default)]
    enabled_regex_matching: bool,
    #[serde(default)]
    cache_max_size: Option<usize>,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumericAttrCfg {
    key: String,
    #[serde(default)]
    min_value: i64,
    #[serde(default)]
    max_value: i64,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoolAttrCfg {
    key: String,
    value: bool,
    #[serde(default)]
    invert_match: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanCountCfg {
    min_spans: i64,
    #[serde(default)]
    max_spans: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitingCfg {
    spans_per_second: i64,
    #[serde(default)]
    burst_capacity: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceStateCfg {
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AndCfg {
    and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropCfg {
    drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompositeCfg {
    max_total_spans_per_second: i64,
    #[serde(default)]
    policy_order: Vec<String>,
    composite_sub_policy: Vec<PolicyConfig>,
    #[serde(default)]
    rate_allocation: Vec<RateAllocation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateAllocation {
    policy: String,
    percent: f64,
}

/// A policy ready to evaluate.
#[derive(Debug)]
enum Policy {
    Always,
    Latency {
        lower_ms: i64,
        upper_ms: i64,
    },
    StatusCode(HashSet<String>),
    Probabilistic {
        salt: Vec<u8>,
        threshold: u64,
    },
    StringAttr {
        key: String,
        exact: HashSet<String>,
        regexes: Vec<Regex>,
        invert: bool,
    },
    NumericAttr {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    BoolAttr {
        key: String,
        value: bool,
        invert: bool,
    },
    SpanCount {
        min: i64,
        max: i64,
    },
    RateLimiting {
        id: String,
        per_second: f64,
        burst: f64,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite {
        id: String,
        max_total: i64,
        subs: Vec<(Policy, i64)>,
    },
}

/// The configured policies.
#[derive(Debug, Default)]
pub struct Policies {
    policies: Vec<(String, Policy)>,
}

/// Budgets of the rate-limiting and composite policies (checkpointed with the partition).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Token buckets of `rate_limiting` policies: `(tokens, at ms)`.
    buckets: BTreeMap<String, (f64, i64)>,
    /// Spans a `composite` policy kept in its current second: `(second, per sub-policy)`.
    seconds: BTreeMap<String, (i64, Vec<i64>)>,
}

impl Policies {
    /// Keeps every trace.
    pub fn keep_all() -> Policies {
        Policies::default()
    }

    /// Reads a policy file; every problem named with the policy it is in.
    pub fn load(path: &str) -> anyhow::Result<Policies> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the tail-sampling policies {path}: {e}"))?;
        Policies::parse(&text).map_err(|e| anyhow::anyhow!("tail-sampling policies {path}: {e}"))
    }

    /// Parses policies in the Collector's YAML shape.
    pub fn parse(text: &str) -> anyhow::Result<Policies> {
        let file: File = serde_yaml_ng::from_str(text)?;
        let mut names = HashSet::new();
        let mut policies = Vec::new();
        for p in file.policies {
            anyhow::ensure!(!p.name.is_empty(), "a policy has no name");
            anyhow::ensure!(
                names.insert(p.name.clone()),
                "policy name {:?} is used twice",
                p.name
            );
            let built =
                build(&p, &p.name).map_err(|e| anyhow::anyhow!("policy {:?}: {e}", p.name))?;
            policies.push((p.name, built));
        }
        // Drop policies first: a drop decides alone.
        policies.sort_by_key(|(_, p)| !matches!(p, Policy::Drop(_)));
        Ok(Policies { policies })
    }

    /// Whether any policy is configured (none: every trace is kept).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether to keep a trace decided at partition time `now_ms`.
    pub fn decide(&self, state: &mut State, spans: &[Span], now_ms: i64) -> bool {
        if self.policies.is_empty() {
            return true;
        }
        let mut sampled = false;
        for (_, p) in &self.policies {
            match p.evaluate(state, spans, now_ms) {
                Decision::Dropped => return false,
                Decision::Sampled => sampled = true,
                Decision::NotSampled => {}
            }
        }
        sampled
    }
}

fn sub<T: Clone>(v: &Option<T>, kind: &str) -> anyhow::Result<T> {
    v.clone()
        .ok_or_else(|| anyhow::anyhow!("type {kind} needs a `{kind}:` block with its settings"))
}

fn build(p: &PolicyConfig, path: &str) -> anyhow::Result<Policy> {
    Ok(match p.kind.as_str() {
        "always_sample" => Policy::Always,
        "latency" => {
            let c = sub(&p.latency, "latency")?;
            anyhow::ensure!(
                c.upper_threshold_ms == 0 || c.upper_threshold_ms >= c.threshold_ms,
                "upper_threshold_ms must not be below threshold_ms"
            );
            Policy::Latency {
                lower_ms: c.threshold_ms,
                upper_ms: c.upper_threshold_ms,
            }
        }
        "status_code" => {
            let c = sub(&p.status_code, "status_code")?;
            anyhow::ensure!(!c.status_codes.is_empty(), "status_codes is empty");
            let mut set = HashSet::new();
            for code in c.status_codes {
                let ours = match code.as_str() {
                    "OK" => "Ok",
                    "ERROR" => "Error",
                    "UNSET" => "Unset",
                    other => anyhow::bail!("unknown status code {other:?} (OK, ERROR or UNSET)"),
                };
                set.insert(ours.to_string());
            }
            Policy::StatusCode(set)
        }
        "probabilistic" => {
            let c = sub(&p.probabilistic, "probabilistic")?;
            anyhow::ensure!(
                c.sampling_percentage >= 0.0,
                "sampling_percentage must not be negative"
            );
            let salt = if c.hash_salt.is_empty() {
                "default-hash-seed".to_string()
            } else {
                c.hash_salt
            };
            Policy::Probabilistic {
                salt: salt.into_bytes(),
                threshold: threshold(c.sampling_percentage / 100.0),
            }
        }
        "string_attribute" => {
            let c = sub(&p.string_attribute, "string_attribute")?;
            let _ = c.cache_max_size;
            let values: Vec<String> = c.values.into_iter().filter(|v| !v.is_empty()).collect();
            let regexes = if c.enabled_regex_matching {
                values
                    .iter()
                    .map(|v| Regex::new(v).map_err(|e| anyhow::anyhow!("regex {v:?}: {e}")))
                    .collect::<anyhow::Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            Policy::StringAttr {
                key: c.key,
                exact: if c.enabled_regex_matching {
                    HashSet::new()
                } else {
                    values.into_iter().collect()
                },
                regexes,
                invert: c.invert_match,
            }
        }
        "numeric_attribute" => {
            let c = sub(&p.numeric_attribute, "numeric_attribute")?;
            let min = if c.min_value == 0 {
                i64::MIN
            } else {
                c.min_value
            };
            let max = if c.max_value == 0 {
                i64::MAX
            } else {
                c.max_value
            };
            anyhow::ensure!(min <= max, "min_value is above max_value");
            Policy::NumericAttr {
                key: c.key,
                min,
                max,
                invert: c.invert_match,
            }
        }
        "boolean_attribute" => {
            let c = sub(&p.boolean_attribute, "boolean_attribute")?;
            Policy::BoolAttr {
                key: c.key,
                value: c.value,
                invert: c.invert_match,
            }
        }
        "span_count" => {
            let c = sub(&p.span_count, "span_count")?;
            anyhow::ensure!(
                c.max_spans == 0 || c.max_spans >= c.min_spans,
                "max_spans is below min_spans"
            );
            Policy::SpanCount {
                min: c.min_spans,
                max: c.max_spans,
            }
        }
        "rate_limiting" => {
            let c = sub(&p.rate_limiting, "rate_limiting")?;
            anyhow::ensure!(c.spans_per_second > 0, "spans_per_second must be above 0");
            let burst = if c.burst_capacity > 0 {
                c.burst_capacity
            } else {
                2 * c.spans_per_second
            };
            Policy::RateLimiting {
                id: path.to_string(),
                per_second: c.spans_per_second as f64,
                burst: burst as f64,
            }
        }
        "trace_state" => {
            let c = sub(&p.trace_state, "trace_state")?;
            Policy::TraceState {
                key: c.key,
                values: c.values.into_iter().collect(),
            }
        }
        "and" => {
            let c = sub(&p.and, "and")?;
            anyhow::ensure!(!c.and_sub_policy.is_empty(), "and_sub_policy is empty");
            Policy::And(subs(&c.and_sub_policy, path)?)
        }
        "drop" => {
            let c = sub(&p.drop, "drop")?;
            anyhow::ensure!(!c.drop_sub_policy.is_empty(), "drop_sub_policy is empty");
            Policy::Drop(subs(&c.drop_sub_policy, path)?)
        }
        "composite" => {
            let c = sub(&p.composite, "composite")?;
            anyhow::ensure!(
                c.max_total_spans_per_second > 0,
                "max_total_spans_per_second must be above 0"
            );
            let _ = c.policy_order;
            let n = c.composite_sub_policy.len() as i64;
            let mut out = Vec::new();
            for s in &c.composite_sub_policy {
                let share = match c.rate_allocation.iter().find(|a| a.policy == s.name) {
                    Some(a) if a.percent > 0.0 => {
                        (a.percent / 100.0 * c.max_total_spans_per_second as f64) as i64
                    }
                    Some(_) => c.max_total_spans_per_second / n.max(1),
                    None => {
                        tracing::warn!(policy = %path, sub_policy = %s.name, "a composite sub-policy without rate_allocation never samples (as in the OpenTelemetry Collector)");
                        0
                    }
                };
                let built = build(s, &format!("{path}/{}", s.name))
                    .map_err(|e| anyhow::anyhow!("sub-policy {:?}: {e}", s.name))?;
                out.push((built, share));
            }
            Policy::Composite {
                id: path.to_string(),
                max_total: c.max_total_spans_per_second,
                subs: out,
            }
        }
        other => anyhow::bail!(
            "unknown policy type {other:?} (always_sample, latency, status_code, probabilistic, string_attribute, numeric_attribute, boolean_attribute, span_count, rate_limiting, trace_state, and, drop, composite)"
        ),
    })
}

fn subs(list: &[PolicyConfig], path: &str) -> anyhow::Result<Vec<Policy>> {
    list.iter()
        .map(|s| {
            build(s, &format!("{path}/{}", s.name))
                .map_err(|e| anyhow::anyhow!("sub-policy {:?}: {e}", s.name))
        })
        .collect()
}

/// Whether any resource or span attribute `key` satisfies `matches`.
fn any_attr(spans: &[Span], key: &str, matches: impl Fn(&str) -> bool) -> bool {
    spans.iter().any(|s| {
        s.resource_attrs.get(key).is_some_and(|v| matches(v))
            || s.attrs.get(key).is_some_and(|v| matches(v))
    })
}

fn verdict(hit: bool, invert: bool) -> Decision {
    if hit != invert {
        Decision::Sampled
    } else {
        Decision::NotSampled
    }
}

impl Policy {
    fn evaluate(&self, state: &mut State, spans: &[Span], now_ms: i64) -> Decision {
        let yes = |b: bool| verdict(b, false);
        match self {
            Policy::Always => Decision::Sampled,
            Policy::Latency { lower_ms, upper_ms } => {
                let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
                let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
                let ms = (end - start) / 1_000_000;
                yes(ms > *lower_ms && (*upper_ms == 0 || ms <= *upper_ms))
            }
            Policy::StatusCode(codes) => yes(spans.iter().any(|s| codes.contains(&s.status_code))),
            Policy::Probabilistic { salt, threshold } => {
                let id = spans.first().map(|s| s.trace_id.as_str()).unwrap_or("");
                yes(fnv1a64(salt.iter().chain(hex16(id).iter())) <= *threshold)
            }
            Policy::StringAttr {
                key,
                exact,
                regexes,
                invert,
            } => {
                let hit = any_attr(spans, key, |v| {
                    !v.is_empty() && (exact.contains(v) || regexes.iter().any(|r| r.is_match(v)))
                });
                verdict(hit, *invert)
            }
            Policy::NumericAttr {
                key,
                min,
                max,
                invert,
            } => {
                let hit = any_attr(spans, key, |v| {
                    v.parse::<i64>().is_ok_and(|n| *min <= n && n <= *max)
                });
                verdict(hit, *invert)
            }
            Policy::BoolAttr { key, value, invert } => {
                let want = if *value { "true" } else { "false" };
                verdict(any_attr(spans, key, |v| v == want), *invert)
            }
            Policy::SpanCount { min, max } => {
                let n = spans.len() as i64;
                yes(n >= *min && (*max == 0 || n <= *max))
            }
            Policy::RateLimiting {
                id,
                per_second,
                burst,
            } => {
                let (tokens, at) = state.buckets.entry(id.clone()).or_insert((*burst, now_ms));
                let elapsed = (now_ms - *at).max(0) as f64 / 1000.0;
                *tokens = (*tokens + elapsed * per_second).min(*burst);
                *at = now_ms.max(*at);
                let n = spans.len() as f64;
                if *tokens >= n {
                    *tokens -= n;
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Policy::TraceState { key, values } => yes(spans.iter().any(|s| {
                s.trace_state.split(',').any(|kv| {
                    kv.trim()
                        .split_once('=')
                        .is_some_and(|(k, v)| k == key && values.contains(v))
                })
            })),
            Policy::And(subs) => yes(subs
                .iter()
                .all(|p| p.evaluate(state, spans, now_ms) == Decision::Sampled)),
            Policy::Drop(subs) => {
                if subs
                    .iter()
                    .all(|p| p.evaluate(state, spans, now_ms) == Decision::Sampled)
                {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Policy::Composite {
                id,
                max_total,
                subs,
            } => {
                let second = now_ms.div_euclid(1000);
                let n = spans.len() as i64;
                for (i, (p, share)) in subs.iter().enumerate() {
                    if p.evaluate(state, spans, now_ms) != Decision::Sampled {
                        continue;
                    }
                    let (at, used) = state
                        .seconds
                        .entry(id.clone())
                        .or_insert((second, vec![0; subs.len()]));
                    if *at != second {
                        *at = second;
                        used.iter_mut().for_each(|u| *u = 0);
                    }
                    let total: i64 = used.iter().sum();
                    return if used[i] + n <= *share && total + n <= *max_total {
                        used[i] += n;
                        Decision::Sampled
                    } else {
                        Decision::NotSampled
                    };
                }
                Decision::NotSampled
            }
        }
    }
}

fn hex16(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

/// FNV-1a 64 (the Collector hashes the salt, then the trace id's 16 bytes).
fn fnv1a64<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `MaxUint64 × ratio` as Go's 64-bit `big.Float` computes it (rounded to 64 significant
/// bits, ties to even, then truncated to an integer, clamped).
fn threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= 1.0 {
        return u64::MAX;
    }
    // ratio = mantissa × 2^exp exactly.
    let bits = ratio.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i64;
    let (mantissa, exp) = if raw_exp == 0 {
        (bits & ((1 << 52) - 1), -1074)
    } else {
        ((bits & ((1 << 52) - 1)) | (1 << 52), raw_exp - 1075)
    };
    let product = u64::MAX as u128 * mantissa as u128;
    let len = 128 - product.leading_zeros() as i64;
    let rounded = if len > 64 {
        let shift = (len - 64) as u32;
        let mut q = product >> shift;
        let rem = product & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q += 1;
        }
        q << shift
    } else {
        product
    };
    let value = if exp >= 0 {
        rounded.checked_shl(exp as u32).unwrap_or(u128::MAX)
    } else if -exp >= 128 {
        0
    } else {
        rounded >> (-exp) as u32
    };
    value.min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, status: &str, start_ms: i64, end_ms: i64) -> Span {
        Span {
            trace_id: "0123456789abcdef0123456789abcdef".into(),
            span_id: id.into(),
            status_code: status.into(),
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            ..Span::default()
        }
    }

    #[test]
    fn thresholds_match_the_collector() {
        assert_eq!(threshold(1.0), u64::MAX);
        assert_eq!(threshold(0.5), 9_223_372_036_854_775_807);
        assert_eq!(threshold(0.1), 1_844_674_407_370_955_263);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325, "FNV-1a test vector");
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c, "FNV-1a test vector");
    }

    #[test]
    fn drop_wins_and_any_sample_keeps() {
        let p = Policies::parse(
            r#"
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 100}
  - name: no-health
    type: drop
    drop:
      drop_sub_policy:
        - name: health
          type: string_attribute
          string_attribute: {key: http.route, values: ["/health.*"], enabled_regex_matching: true}
"#,
        )
        .unwrap();
        let mut st = State::default();
        assert!(p.decide(&mut st, &[span("1", "Error", 0, 10)], 0));
        assert!(
            !p.decide(&mut st, &[span("1", "Ok", 0, 100)], 0),
            "100 ms is not above 100"
        );
        assert!(p.decide(&mut st, &[span("1", "Ok", 0, 101)], 0));
        let mut health = span("1", "Error", 0, 500);
        health.attrs.insert("http.route".into(), "/healthz".into());
        assert!(
            !p.decide(&mut st, &[health], 0),
            "drop wins over error and slow"
        );
    }

    #[test]
    fn rate_limiting_runs_on_event_time() {
        let p = Policies::parse(
            "policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 2}}]",
        )
        .unwrap();
        let mut st = State::default();
        let trace = vec![span("1", "Ok", 0, 1), span("2", "Ok", 0, 1)];
        assert!(p.decide(&mut st, &trace, 1_000), "burst 4");
        assert!(p.decide(&mut st, &trace, 1_000));
        assert!(!p.decide(&mut st, &trace, 1_000));
        assert!(p.decide(&mut st, &trace, 2_000), "refilled 2 in a second");
    }

    #[test]
    fn bad_policies_are_named() {
        let e = Policies::parse("policies: [{name: x, type: latency}]").unwrap_err();
        assert!(
            e.to_string()
                .contains("policy \"x\": type latency needs a `latency:` block"),
            "{e}"
        );
        let e = Policies::parse("policies: [{name: x, type: nope}]").unwrap_err();
        assert!(
            e.to_string().contains("unknown policy type \"nope\""),
            "{e}"
        );
    }
}
