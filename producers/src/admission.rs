//! Admission control: the request bodies the collector holds at once are bounded in bytes
//! (`collector.max_inflight_bytes`), so its memory stays bounded however many clients push.
//! A request past the bound waits up to [`ADMISSION_WAIT`] for room (backpressure), then is
//! refused 503 with `Retry-After`, which every push client (Prometheus, OTLP SDKs and
//! collectors, Promtail, Grafana Agent) retries. Nothing of a refused request was read.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::CollectorError;

/// How long a request may wait for room before it is refused.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Permits count KiB, so a budget of many GiB still fits the semaphore's `u32` grants.
const UNIT: usize = 1024;

/// The byte budget shared by every collector listener (HTTP and gRPC).
#[derive(Clone)]
pub struct Admission {
    budget: Arc<Semaphore>,
    /// The budget in units.
    units: u32,
    /// The budget in bytes, as configured (for messages).
    limit: usize,
    /// A body of unknown length (chunked) is charged as this many bytes: the most it can be.
    unknown: usize,
}

impl Admission {
    /// A budget of `limit` bytes; bodies without `Content-Length` count as `max_body` bytes.
    pub fn new(limit: usize, max_body: usize) -> Self {
        let units = limit
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Admission {
            budget: Arc::new(Semaphore::new(units as usize)),
            units,
            limit,
            unknown: max_body,
        }
    }

    /// Room for a body of `bytes`: granted at once or within [`ADMISSION_WAIT`], else the
    /// overload error. A body larger than the whole budget waits for all of it (it is
    /// refused anyway if it exceeds `max_body_bytes`).
    pub async fn admit(&self, bytes: usize) -> Result<Room, CollectorError> {
        let want = (bytes.div_ceil(UNIT).max(1)).min(self.units as usize) as u32;
        let acquire = self.budget.clone().acquire_many_owned(want);
        match tokio::time::timeout(ADMISSION_WAIT, acquire).await {
            Ok(Ok(permit)) => {
                let room = Room {
                    permit: Some(permit),
                    admission: self.clone(),
                };
                room.admission.publish_gauge();
                Ok(room)
            }
            _ => Err(CollectorError::Overloaded(format!(
                "the collector is holding its limit of {} bytes of requests (collector.max_inflight_bytes); this one ({bytes} bytes) waited {} ms for room",
                self.limit,
                ADMISSION_WAIT.as_millis()
            ))),
        }
    }

    /// Bytes of the budget in use now (for the `obs_collector_inflight_bytes` gauge).
    pub fn in_use(&self) -> usize {
        (self.units as usize - self.budget.available_permits()) * UNIT
    }

    fn publish_gauge(&self) {
        metrics::gauge!("obs_collector_inflight_bytes").set(self.in_use() as f64);
    }
}

/// A request's share of the budget, given back when it is dropped (the answer is ready).
pub struct Room {
    permit: Option<OwnedSemaphorePermit>,
    admission: Admission,
}

impl Drop for Room {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.admission.publish_gauge();
    }
}

/// The HTTP middleware: charges the body's `Content-Length` (or `max_body_bytes` when it is
/// chunked) until the answer is ready.
pub async fn limit(State(admission): State<Admission>, req: Request, next: Next) -> Response {
    let bytes = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(admission.unknown);
    let room = match admission.admit(bytes).await {
        Ok(room) => room,
        Err(e) => return crate::server::text_error(e),
    };
    let resp = next.run(req).await;
    drop(room);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_past_the_budget_waits_then_is_refused_and_room_returns_on_release() {
        let a = Admission::new(10 * UNIT, 16 << 20);
        let first = a.admit(6 * UNIT).await.unwrap();
        assert_eq!(a.in_use(), 6 * UNIT);
        let second = a.admit(4 * UNIT).await.unwrap();
        assert_eq!(a.in_use(), 10 * UNIT);
        let refused = a.admit(1).await.err().expect("no room is left");
        assert!(matches!(refused, CollectorError::Overloaded(_)));
        assert!(
            refused.to_string().contains("max_inflight_bytes"),
            "{refused}"
        );
        drop(first);
        let third = a.admit(5 * UNIT).await.unwrap();
        assert_eq!(a.in_use(), 9 * UNIT);
        drop((second, third));
        assert_eq!(a.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiting_request_is_admitted_when_room_frees_within_the_wait() {
        let a = Admission::new(4 * UNIT, 16 << 20);
        let held = a.admit(4 * UNIT).await.unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit(2 * UNIT).await.map(|_| ()) })
        };
        tokio::time::sleep(ADMISSION_WAIT / 4).await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_takes_all_of_it_rather_than_never_fitting() {
        let a = Admission::new(4 * UNIT, 16 << 20);
        let big = a.admit(100 * UNIT).await.unwrap();
        assert_eq!(a.in_use(), 4 * UNIT);
        drop(big);
    }
}
