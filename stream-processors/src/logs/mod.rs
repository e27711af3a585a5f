//! Log pipelines (issue #12, in progress): the stages between the raw log topics and
//! `obs.logs`. So far:
//!
//! * `redact`: PII detectors (e-mail, IPv4/6, Luhn-checked cards, US SSNs, bearer tokens,
//!   JWTs, configured regexes) and what is done with a finding (mask, keyed hash, drop).
//!
//! Not yet wired into a running processor: parsing, shaping, routing and the pipeline
//! configuration come next.

pub mod redact;
