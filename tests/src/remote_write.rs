//! Remote-write requests for tests that send metrics by hand (the Prometheus wire format:
//! snappy-compressed `WriteRequest`).

use obs_producers::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;

use crate::http;

/// One series to send: metric name, labels, samples `(ms, value)`.
pub struct Series<'a> {
    /// `__name__`.
    pub name: &'a str,
    /// Other labels.
    pub labels: Vec<(&'a str, String)>,
    /// Samples.
    pub samples: Vec<(i64, f64)>,
}

/// The snappy-compressed body of a remote-write request carrying `series`.
pub fn body(series: &[Series<'_>]) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: std::iter::once(Label {
                    name: "__name__".into(),
                    value: s.name.into(),
                })
                .chain(s.labels.iter().map(|(k, v)| Label {
                    name: (*k).into(),
                    value: v.clone(),
                }))
                .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|&(timestamp, value)| Sample { value, timestamp })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compresses")
}

/// Posts a remote-write body; the status (0 when the request failed) and the answer text.
pub async fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    match http(30)
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(body)
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}
