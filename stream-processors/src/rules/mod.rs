//! Prometheus alerting and recording rules.
//!
//! * [`file`]: rule files as Prometheus writes them (groups with `interval`, `limit`,
//!   `query_offset`, `labels`; rules with `record` or `alert`, `expr`, `for`,
//!   `keep_firing_for`, `labels`, `annotations`), loaded strictly and checked as
//!   `promtool check rules` checks them, every problem named with file, group and rule.
//! * [`template`]: the syntax check of label and annotation templates (Go's
//!   `text/template` action syntax).
//! * [`series_notation`]: the `input_series` notation of rule unit-test files
//!   (`a+bxn`, `_`, `stale`), for `obs rules test`.

pub mod alerting;
pub mod api;
pub mod backtest;
pub mod engine;
pub mod expand;
pub mod file;
pub mod group;
pub mod notify;
pub mod run;
pub mod series_notation;
pub mod slo;
pub mod store;
pub mod template;
pub mod unit;
