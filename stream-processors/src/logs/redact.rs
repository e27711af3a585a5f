//! PII redaction of log text: detectors for e-mail addresses, IPv4 and IPv6 addresses,
//! payment card numbers (Luhn-checked, so order ids and other long numbers are left alone),
//! US social security numbers (valid area, group and serial), bearer tokens, JWTs and
//! configured regexes; each found value is masked, hashed with a key (equal values give
//! equal hashes, so redacted fields stay joinable) or dropped.
//!
//! Candidates are found by regex, then checked by code where a regex cannot tell (Luhn,
//! octet ranges, IPv6 syntax, SSN ranges), and replaced right to left so offsets hold.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

/// What is done with a value a detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replaced by `[REDACTED:<kind>]`.
    Mask,
    /// Replaced by `[<kind>:<first 16 hex digits of HMAC-SHA256(key, value)>]`.
    Hash,
    /// Removed.
    Drop,
}

impl Action {
    /// Parses the configured spelling (`mask`, `hash`, `drop`).
    pub fn parse(s: &str) -> Result<Action, String> {
        match s {
            "mask" => Ok(Action::Mask),
            "hash" => Ok(Action::Hash),
            "drop" => Ok(Action::Drop),
            other => Err(format!(
                "unknown redaction action {other:?}: expected mask, hash or drop"
            )),
        }
    }
}

/// A kind of sensitive value.
#[derive(Debug, Clone)]
pub enum Detector {
    /// `local@domain.tld`.
    Email,
    /// Dotted quad with every octet ≤ 255.
    Ipv4,
    /// Any text `std::net::Ipv6Addr` accepts (with at least two colons).
    Ipv6,
    /// 13–19 digits, optionally grouped by spaces or dashes, passing the Luhn check.
    Card,
    /// `AAA-GG-SSSS` with a valid area (not 000, 666 or 9xx), group (not 00) and serial
    /// (not 0000).
    UsSsn,
    /// `Bearer <token>` (the token is replaced, the word kept).
    BearerToken,
    /// Three base64url parts whose first two start with `eyJ` (a JSON object).
    Jwt,
    /// A configured regex, named for the replacement.
    Pattern {
        /// Name shown in masks and hashes.
        name: String,
        /// What it matches.
        regex: Regex,
    },
}

/// The candidate regexes of the built-in detectors.
struct Candidates {
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
    card: Regex,
    ssn: Regex,
    bearer: Regex,
    jwt: Regex,
}

fn candidates() -> &'static Candidates {
    static C: std::sync::OnceLock<Candidates> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("built-in pattern compiles");
        Candidates {
            email: re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            ipv4: re(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"),
            ipv6: re(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\d{1,3}(?:\.\d{1,3}){3})?"),
            card: re(r"\b\d(?:[ -]?\d){12,18}\b"),
            ssn: re(r"\b(\d{3})-(\d{2})-(\d{4})\b"),
            bearer: re(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]+=*)"),
            jwt: re(r"\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+"),
        }
    })
}

/// The Luhn check of a digit string.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

impl Detector {
    /// The name used in replacements.
    pub fn name(&self) -> &str {
        match self {
            Detector::Email => "email",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Card => "card",
            Detector::UsSsn => "ssn",
            Detector::BearerToken => "bearer",
            Detector::Jwt => "jwt",
            Detector::Pattern { name, .. } => name,
        }
    }

    /// A built-in detector by its configured name.
    pub fn builtin(name: &str) -> Result<Detector, String> {
        Ok(match name {
            "email" => Detector::Email,
            "ipv4" => Detector::Ipv4,
            "ipv6" => Detector::Ipv6,
            "card" => Detector::Card,
            "ssn" => Detector::UsSsn,
            "bearer" => Detector::BearerToken,
            "jwt" => Detector::Jwt,
            other => {
                return Err(format!(
                    "unknown detector {other:?}: expected email, ipv4, ipv6, card, ssn, bearer, jwt or a pattern"
                ));
            }
        })
    }

    /// Byte ranges of the sensitive values in `text`.
    fn find(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        let c = candidates();
        match self {
            Detector::Email => out.extend(c.email.find_iter(text).map(|m| (m.start(), m.end()))),
            Detector::Ipv4 => out.extend(
                c.ipv4
                    .find_iter(text)
                    .filter(|m| {
                        // Not four parts of a longer dotted number (a version 1.2.3.4.5).
                        let dotted_digit =
                            |s: &[u8]| s.len() >= 2 && s[0] == b'.' && s[1].is_ascii_digit();
                        let before: Vec<u8> = text.as_bytes()[..m.start()]
                            .iter()
                            .rev()
                            .take(2)
                            .copied()
                            .collect();
                        m.as_str().parse::<Ipv4Addr>().is_ok()
                            && !dotted_digit(&text.as_bytes()[m.end()..])
                            && !(before.len() == 2
                                && before[0] == b'.'
                                && before[1].is_ascii_digit())
                    })
                    .map(|m| (m.start(), m.end())),
            ),
            Detector::Ipv6 => out.extend(
                c.ipv6
                    .find_iter(text)
                    .filter(|m| m.as_str().parse::<Ipv6Addr>().is_ok())
                    .map(|m| (m.start(), m.end())),
            ),
            Detector::Card => out.extend(
                c.card
                    .find_iter(text)
                    .filter(|m| {
                        let digits: Vec<u8> =
                            m.as_str().bytes().filter(u8::is_ascii_digit).collect();
                        (13..=19).contains(&digits.len()) && luhn(&digits)
                    })
                    .map(|m| (m.start(), m.end())),
            ),
            Detector::UsSsn => out.extend(
                c.ssn
                    .captures_iter(text)
                    .filter(|cap| {
                        let (area, group, serial) = (&cap[1], &cap[2], &cap[3]);
                        area != "000"
                            && area != "666"
                            && !area.starts_with('9')
                            && group != "00"
                            && serial != "0000"
                    })
                    .map(|cap| {
                        let m = cap.get(0).expect("whole match");
                        (m.start(), m.end())
                    }),
            ),
            Detector::BearerToken => out.extend(c.bearer.captures_iter(text).map(|cap| {
                let m = cap.get(1).expect("token group");
                (m.start(), m.end())
            })),
            Detector::Jwt => out.extend(c.jwt.find_iter(text).map(|m| (m.start(), m.end()))),
            Detector::Pattern { regex, .. } => {
                out.extend(regex.find_iter(text).map(|m| (m.start(), m.end())))
            }
        }
    }
}

/// A set of detectors with their actions and the hashing key.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<(Detector, Action)>,
    key: Vec<u8>,
}

/// What one text's redaction found.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted<'a> {
    /// The text with every found value replaced (borrowed when nothing was found).
    pub text: Cow<'a, str>,
    /// Values replaced, per detector name.
    pub found: Vec<(String, usize)>,
}

impl Redactor {
    /// Detectors applied in order (an earlier one's finding wins where two overlap);
    /// `key` keys the hashes.
    pub fn new(rules: Vec<(Detector, Action)>, key: &[u8]) -> Redactor {
        Redactor {
            rules,
            key: key.to_vec(),
        }
    }

    /// The keyed hash of a value, as replacements show it.
    pub fn hash(&self, value: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..8])
    }

    /// `text` with every sensitive value replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Redacted<'a> {
        // (start, end, rule index); earlier rules first, so they win overlaps.
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        let mut found = Vec::new();
        for (i, (detector, _)) in self.rules.iter().enumerate() {
            found.clear();
            detector.find(text, &mut found);
            for &(s, e) in &found {
                if s < e && !spans.iter().any(|&(a, b, _)| s < b && a < e) {
                    spans.push((s, e, i));
                }
            }
        }
        if spans.is_empty() {
            return Redacted {
                text: Cow::Borrowed(text),
                found: Vec::new(),
            };
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut counts: Vec<(String, usize)> = Vec::new();
        let mut at = 0;
        for (s, e, i) in spans {
            let (detector, action) = &self.rules[i];
            out.push_str(&text[at..s]);
            let name = detector.name();
            match action {
                Action::Mask => {
                    out.push_str("[REDACTED:");
                    out.push_str(name);
                    out.push(']');
                }
                Action::Hash => {
                    out.push('[');
                    out.push_str(name);
                    out.push(':');
                    out.push_str(&self.hash(&text[s..e]));
                    out.push(']');
                }
                Action::Drop => {}
            }
            at = e;
            match counts.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name.to_string(), 1)),
            }
        }
        out.push_str(&text[at..]);
        Redacted {
            text: Cow::Owned(out),
            found: counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(action: Action) -> Redactor {
        let rules = ["jwt", "bearer", "email", "card", "ssn", "ipv4", "ipv6"]
            .iter()
            .map(|n| (Detector::builtin(n).unwrap(), action))
            .collect();
        Redactor::new(rules, b"test-key")
    }

    #[test]
    fn luhn_tells_cards_from_other_numbers() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"5500005555555559"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn masks_each_kind_and_leaves_look_alikes() {
        let r = all(Action::Mask);
        let cases = [
            (
                "paid with 4111 1111 1111 1111 for order 4111111111111112",
                "paid with [REDACTED:card] for order 4111111111111112",
            ),
            (
                "card=5500-0055-5555-5559 ts=1700000000123",
                "card=[REDACTED:card] ts=1700000000123",
            ),
            (
                "mail ann.lee+x@example.co.uk now",
                "mail [REDACTED:email] now",
            ),
            (
                "from 10.0.12.7. not 999.1.1.1 version 1.2.3.4.5 or 0.1.2.3.4",
                "from [REDACTED:ipv4]. not 999.1.1.1 version 1.2.3.4.5 or 0.1.2.3.4",
            ),
            (
                "peer 2001:db8::8a2e:370:7334 at 12:30:45",
                "peer [REDACTED:ipv6] at 12:30:45",
            ),
            (
                "ssn 123-45-6789 but not 000-12-3456 or 666-12-3456 or 123-00-4567",
                "ssn [REDACTED:ssn] but not 000-12-3456 or 666-12-3456 or 123-00-4567",
            ),
            (
                "Authorization: Bearer abc.DEF-123_x=",
                "Authorization: Bearer [REDACTED:bearer]",
            ),
            (
                "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end",
                "token [REDACTED:jwt] end",
            ),
            ("nothing to see here", "nothing to see here"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact(input).text, want, "{input}");
        }
    }

    #[test]
    fn hashes_are_keyed_and_equal_for_equal_values() {
        let r = all(Action::Hash);
        let a = r.redact("user a@example.com logged in");
        let b = r.redact("a@example.com again");
        let h = r.hash("a@example.com");
        assert_eq!(a.text, format!("user [email:{h}] logged in"));
        assert_eq!(b.text, format!("[email:{h}] again"));
        assert_eq!(a.found, vec![("email".to_string(), 1)]);
        let other_key = Redactor::new(vec![(Detector::Email, Action::Hash)], b"other");
        assert_ne!(other_key.hash("a@example.com"), h);
    }

    #[test]
    fn drop_removes_and_patterns_apply_in_order() {
        let r = Redactor::new(
            vec![
                (
                    Detector::Pattern {
                        name: "order".into(),
                        regex: Regex::new(r"order-\d+").unwrap(),
                    },
                    Action::Mask,
                ),
                (Detector::Email, Action::Drop),
            ],
            b"k",
        );
        let out = r.redact("order-42 by bob@example.org and order-7");
        assert_eq!(out.text, "[REDACTED:order] by  and [REDACTED:order]");
        assert_eq!(
            out.found,
            vec![("order".to_string(), 2), ("email".to_string(), 1)]
        );
        assert!(matches!(r.redact("clean").text, Cow::Borrowed(_)));
        assert!(Action::parse("shred").is_err());
        assert!(Detector::builtin("phone").is_err());
    }
}
