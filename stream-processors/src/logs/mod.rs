//! Log pipelines (issue #12, in progress): the stages between what the collectors receive
//! and `obs.logs`.
//!
//! * `pipeline`: a configured chain of stages per tenant and services (parse JSON, logfmt,
//!   regex captures; set, rename, drop or keep fields; severity; drop by condition; redact),
//!   failures naming the pipeline, stage and reason.
//! * `redact`: PII detectors (e-mail, IPv4/6, Luhn-checked cards, US SSNs, bearer tokens,
//!   JWTs, configured regexes) and what is done with a finding (mask, keyed hash, drop).
//!
//! * `run`: the log processor (`obs.logs.ingest` → pipelines → `obs.logs` partition for
//!   partition, failures to `obs.dlq`), exactly once by the input offset each output
//!   message carries.
//!
//! Not yet: grok patterns, timestamp and trace-id extraction, lookup tables, routing to
//! other topics, sampling, and JSON lines from `obs.logs.raw` (they bypass pipelines).

pub mod pipeline;
pub mod redact;
pub mod run;
