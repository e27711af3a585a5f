//! One read of a topic shared by two stages of one process (`obs up`): the sinks' reader
//! of `obs.spans` also hands each message to the trace processor, so the broker serves
//! and the process fetches every span once instead of twice.
//!
//! Why: under spans the second fetch was ~40% of the broker's CPU (PERFORMANCE.md,
//! fifteenth round). The processor asks to join with [`Joiner::join`] once it knows where
//! it starts; the reader ([`Host`]) admits it only when the processor would not wait long
//! for its first message, and lets it go (the processor then reads with its own consumer
//! from the next offset it has not had) when either side holds the other back for longer
//! than the processor's patience: a sink retrying ClickHouse never stops the processor.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use obs_schemas::Topic;
use obs_schemas::wire::SharedDecode;
use rdkafka::message::OwnedMessage;
use tokio::sync::{mpsc, oneshot};

/// What a reader hands on: one message of its topic, shared by everything that reads it.
pub type Delivery = Arc<Delivered>;

/// One message of a topic as its readers share it.
pub struct Delivered {
    /// The message as read.
    pub message: OwnedMessage,
    /// The message decoded by the first reader that shares decodes, for the others to read.
    pub decoded: OnceLock<SharedDecode>,
}

impl Delivered {
    /// A message nobody has decoded yet.
    pub fn new(message: OwnedMessage) -> Delivery {
        Arc::new(Delivered {
            message,
            decoded: OnceLock::new(),
        })
    }
}

/// A processor's request to read its input from a sink's reader.
pub struct JoinRequest {
    /// Where the processor starts each partition it owns (it skips what is below).
    pub starts: BTreeMap<i32, i64>,
    /// How long the reader may wait on the processor, or keep it waiting on a sink,
    /// before letting it go.
    pub patience: Duration,
    /// Where the messages arrive, or `None` when the reader does not admit it.
    pub reply: oneshot::Sender<Option<mpsc::Receiver<Delivery>>>,
}

/// The reader's half: the one request it may get.
pub struct Host {
    /// The topic both read.
    pub topic: Topic,
    requests: oneshot::Receiver<JoinRequest>,
}

/// The processor's half.
pub struct Joiner {
    topic: Topic,
    requests: oneshot::Sender<JoinRequest>,
}

/// A reader of `topic` and the processor that may join it.
pub fn pair(topic: Topic) -> (Host, Joiner) {
    let (tx, rx) = oneshot::channel();
    (
        Host {
            topic,
            requests: rx,
        },
        Joiner {
            topic,
            requests: tx,
        },
    )
}

impl Host {
    /// The processor's request, or `None` when it will not join (its half was dropped) or
    /// has not asked within `wait`.
    pub async fn request(self, wait: Duration) -> Option<JoinRequest> {
        tokio::time::timeout(wait, self.requests).await.ok()?.ok()
    }
}

impl Joiner {
    /// The topic the reader reads.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Asks to read from `starts` on; `None` when the reader is gone or does not admit
    /// the processor (which then reads with its own consumer).
    pub async fn join(
        self,
        starts: BTreeMap<i32, i64>,
        patience: Duration,
    ) -> Option<mpsc::Receiver<Delivery>> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(JoinRequest {
                starts,
                patience,
                reply,
            })
            .ok()?;
        answer.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_processor_that_drops_its_half_is_not_waited_for_and_a_gone_reader_refuses() {
        let (host, joiner) = pair(Topic::Spans);
        drop(joiner);
        assert!(host.request(Duration::from_secs(60)).await.is_none());
        let (host, joiner) = pair(Topic::Spans);
        drop(host);
        assert!(
            joiner
                .join(BTreeMap::from([(0, 5)]), Duration::from_secs(1))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_request_reaches_the_reader_and_its_answer_the_processor() {
        let (host, joiner) = pair(Topic::Spans);
        let asking = tokio::spawn(joiner.join(BTreeMap::from([(1, 7)]), Duration::from_secs(2)));
        let req = host.request(Duration::from_secs(5)).await.expect("asked");
        assert_eq!(req.starts, BTreeMap::from([(1, 7)]));
        assert_eq!(req.patience, Duration::from_secs(2));
        let (tx, rx) = mpsc::channel(1);
        req.reply.send(Some(rx)).ok().unwrap();
        let mut got = asking.await.unwrap().expect("admitted");
        drop(tx);
        assert!(got.recv().await.is_none());
    }
}
