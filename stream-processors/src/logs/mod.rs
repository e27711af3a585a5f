//! Log pipelines: the stages between what the collectors receive (and what log agents put
//! on `obs.logs.raw`) and `obs.logs`.
//!
//! * `pipeline`: a configured chain of stages per tenant and services (parse JSON, logfmt,
//!   regex captures, grok; timestamp, severity and trace context from fields; set, rename, drop
//!   or keep fields; CSV lookup tables; drop by condition, stable sampling, route to a
//!   topic; redact),
//!   failures naming the pipeline, stage and reason.
//! * `redact`: PII detectors (e-mail, IPv4/6, Luhn-checked cards, US SSNs, bearer tokens,
//!   JWTs, configured regexes) and what is done with a finding (mask, keyed hash, drop).
//!
//! * `run`: the log processor (`obs.logs.ingest` and `obs.logs.raw` → pipelines →
//!   `obs.logs` partition for partition, failures to `obs.dlq`), exactly once by the input
//!   offsets each output message carries.

pub mod pipeline;
pub mod redact;
pub mod run;
