//! SQL over topics with DataFusion: a topic's records as an Arrow table ([`tables`]),
//! ad-hoc queries over a time range of a topic before the sinks store it ([`adhoc`],
//! `obs sql --topic`), and the event-time windows of streaming queries ([`windows`]: window
//! assignment, due windows, late records, evaluation; not yet run by `obs processor`).

pub mod adhoc;
pub mod tables;
pub mod windows;
