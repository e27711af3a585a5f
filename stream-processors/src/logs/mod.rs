//! Log pipelines (issue #12, in progress): the stages between the raw log topics and
//! `obs.logs`. So far, as pure functions with unit tests:
//!
//! * `pipeline`: a configured chain of stages per tenant and services (parse JSON, logfmt,
//!   regex captures; set, rename, drop or keep fields; severity; drop by condition; redact),
//!   failures naming the pipeline, stage and reason.
//! * `redact`: PII detectors (e-mail, IPv4/6, Luhn-checked cards, US SSNs, bearer tokens,
//!   JWTs, configured regexes) and what is done with a finding (mask, keyed hash, drop).
//!
//! Not yet run by a processor: the Kafka loop (raw topic in, `obs.logs` and `obs.dlq` out,
//! restart-safe), the configuration section and the collectors' routing come next.

pub mod pipeline;
pub mod redact;
