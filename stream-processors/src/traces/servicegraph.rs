//! The service graph as Grafana Tempo builds it, from each decided trace: a client (or
//! producer) span paired with the server (or consumer) span whose parent it is makes one
//! request from the client's service to the server's.
//!
//! * Metrics: `traces_service_graph_request_total`, `_request_failed_total` (either side
//!   has status Error), `_request_server_seconds` and `_request_client_seconds`
//!   (histograms), labelled `client`, `server` and `connection_type` (absent when plain,
//!   else `messaging_system`, `database` or `virtual_node`); `_unpaired_spans_total` with
//!   `client` or `server` for a side that found no partner and no virtual node;
//!   `_dropped_spans_total`, same labels, for a client or server span that arrived after its
//!   trace was decided (it can no longer be paired; span metrics still count it).
//! * Virtual nodes (Tempo's expiry rules, applied when the trace is decided): a root server
//!   span's client is its peer attribute or `user`; a client span without a server span
//!   but with a peer attribute (`peer.service`, `db.name`, `db.system` by default) calls
//!   that peer. A client span with a database attribute is a complete `database` request
//!   at once (the database sends no spans).
//! * Edge windows: the same requests summed per event-time interval, for
//!   `obs.servicegraph`.

use std::collections::HashSet;

use obs_schemas::records::{ServiceGraphEdge, Span};
use serde::{Deserialize, Serialize};

use super::registry::{Registry, SeriesRef};
use super::spanmetrics::latency_seconds;

/// Attributes that make a client span a database call (Tempo's `database_name_attributes`).
const DATABASE_ATTRIBUTES: [&str; 4] = ["db.namespace", "db.name", "db.system", "db.system.name"];

/// The service-graph configuration.
#[derive(Debug, Clone)]
pub struct ServiceGraph {
    /// Histogram upper bounds (s).
    pub buckets: Vec<f64>,
    /// Span attributes naming an uninstrumented server, first found wins.
    pub peer_attributes: Vec<String>,
}

/// One request between two services, found in a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Calling service.
    pub client: String,
    /// Called service.
    pub server: String,
    /// `""`, `messaging_system`, `database` or `virtual_node`.
    pub connection_type: &'static str,
    /// Either side has status Error.
    pub failed: bool,
    /// Server span's duration (s; the client's for a database call, 0 when absent).
    pub server_seconds: f64,
    /// Client span's duration (s; 0 when absent).
    pub client_seconds: f64,
}

/// A span of a trace that found no partner and makes no virtual node.
#[derive(Debug, Clone, PartialEq)]
pub enum Unpaired {
    /// A client or producer span of this service.
    Client(String),
    /// A server or consumer span of this service.
    Server(String),
}

/// Requests between two services summed over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeTotals {
    tenant: String,
    client: String,
    server: String,
    connection_type: String,
    requests: i64,
    failed: i64,
    server_ns: i64,
    client_ns: i64,
}

impl EdgeTotals {
    /// The window's record for `obs.servicegraph`.
    pub fn record(self, partition: i32, start_ms: i64, end_ms: i64) -> ServiceGraphEdge {
        ServiceGraphEdge {
            tenant: self.tenant,
            client: self.client,
            server: self.server,
            connection_type: self.connection_type,
            partition,
            window_start_ms: start_ms,
            window_end_ms: end_ms,
            request_count: self.requests,
            error_count: self.failed,
            latency_sum_ns: self.server_ns,
            client_latency_sum_ns: self.client_ns,
        }
    }
}

fn is_client_side(s: &Span) -> bool {
    matches!(s.kind.as_str(), "Client" | "Producer")
}

fn is_server_side(s: &Span) -> bool {
    matches!(s.kind.as_str(), "Server" | "Consumer")
}

fn attr<'a>(s: &'a Span, name: &str) -> Option<&'a String> {
    s.resource_attrs
        .get(name)
        .or_else(|| s.attrs.get(name))
        .filter(|v| !v.is_empty())
}

impl ServiceGraph {
    fn peer<'a>(&self, s: &'a Span) -> Option<&'a String> {
        self.peer_attributes
            .iter()
            .find_map(|a| s.attrs.get(a).filter(|v| !v.is_empty()))
    }

    /// The server of a database call: `peer.service`, `server.address`,
    /// `network.peer.address[:port]`, else the database attribute's value.
    fn database_server(s: &Span) -> Option<String> {
        let db = DATABASE_ATTRIBUTES.iter().find_map(|a| attr(s, a))?;
        if let Some(p) = attr(s, "peer.service").or_else(|| attr(s, "server.address")) {
            return Some(p.clone());
        }
        if let Some(addr) = attr(s, "network.peer.address") {
            return Some(match attr(s, "network.peer.port") {
                Some(port) => format!("{addr}:{port}"),
                None => addr.clone(),
            });
        }
        Some(db.clone())
    }

    /// The requests and unpaired spans of one trace.
    pub fn edges(&self, spans: &[Span]) -> (Vec<Edge>, Vec<Unpaired>) {
        let failed = |s: &Span| s.status_code == "Error";
        let mut order: Vec<&Span> = spans
            .iter()
            .filter(|s| !s.service.is_empty() && (is_client_side(s) || is_server_side(s)))
            .collect();
        order.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
        let mut paired: HashSet<&str> = HashSet::new();
        let (mut edges, mut unpaired) = (Vec::new(), Vec::new());
        for c in order.iter().filter(|s| is_client_side(s)) {
            if c.kind == "Client"
                && let Some(server) = Self::database_server(c)
            {
                edges.push(Edge {
                    client: c.service.clone(),
                    server,
                    connection_type: "database",
                    failed: failed(c),
                    server_seconds: latency_seconds(c),
                    client_seconds: latency_seconds(c),
                });
                continue;
            }
            let partner = order.iter().find(|s| {
                is_server_side(s)
                    && s.parent_span_id == c.span_id
                    && !paired.contains(s.span_id.as_str())
            });
            match (partner, self.peer(c)) {
                (Some(s), _) => {
                    paired.insert(s.span_id.as_str());
                    let messaging = c.kind == "Producer" || s.kind == "Consumer";
                    edges.push(Edge {
                        client: c.service.clone(),
                        server: s.service.clone(),
                        connection_type: if messaging { "messaging_system" } else { "" },
                        failed: failed(c) || failed(s),
                        server_seconds: latency_seconds(s),
                        client_seconds: latency_seconds(c),
                    });
                }
                (None, Some(peer)) => edges.push(Edge {
                    client: c.service.clone(),
                    server: peer.clone(),
                    connection_type: "virtual_node",
                    failed: failed(c),
                    server_seconds: 0.0,
                    client_seconds: latency_seconds(c),
                }),
                (None, None) => unpaired.push(Unpaired::Client(c.service.clone())),
            }
        }
        for s in order.iter().filter(|s| is_server_side(s)) {
            if paired.contains(s.span_id.as_str()) {
                continue;
            }
            if s.parent_span_id.is_empty() {
                edges.push(Edge {
                    client: self.peer(s).cloned().unwrap_or_else(|| "user".into()),
                    server: s.service.clone(),
                    connection_type: "virtual_node",
                    failed: failed(s),
                    server_seconds: latency_seconds(s),
                    client_seconds: 0.0,
                });
            } else {
                unpaired.push(Unpaired::Server(s.service.clone()));
            }
        }
        (edges, unpaired)
    }

    /// Counts the requests of a decided trace in the metrics and the current edge window.
    pub fn observe_trace(
        &self,
        registry: &mut Registry,
        window: &mut Vec<EdgeTotals>,
        spans: &[Span],
        now_ms: i64,
    ) {
        let Some(tenant) = spans.first().map(|s| s.tenant.as_str()) else {
            return;
        };
        let (edges, unpaired) = self.edges(spans);
        for e in edges {
            // Sorted by label name.
            let all = [
                ("client", e.client.as_str()),
                ("connection_type", e.connection_type),
                ("server", e.server.as_str()),
            ];
            let plain = [all[0], all[2]];
            let labels: &[(&str, &str)] = if e.connection_type.is_empty() {
                &plain
            } else {
                &all
            };
            let mut key = SeriesRef {
                tenant,
                name: "traces_service_graph_request_total",
                labels,
            };
            registry.add(&key, 1.0, now_ms);
            if e.failed {
                key.name = "traces_service_graph_request_failed_total";
                registry.add(&key, 1.0, now_ms);
            }
            key.name = "traces_service_graph_request_server_seconds";
            registry.observe(&key, &self.buckets, e.server_seconds, now_ms);
            key.name = "traces_service_graph_request_client_seconds";
            registry.observe(&key, &self.buckets, e.client_seconds, now_ms);
            let totals = match window.iter_mut().find(|t| {
                t.tenant == tenant
                    && t.client == e.client
                    && t.server == e.server
                    && t.connection_type == e.connection_type
            }) {
                Some(t) => t,
                None => {
                    window.push(EdgeTotals {
                        tenant: tenant.to_string(),
                        client: e.client.clone(),
                        server: e.server.clone(),
                        connection_type: e.connection_type.to_string(),
                        requests: 0,
                        failed: 0,
                        server_ns: 0,
                        client_ns: 0,
                    });
                    window.last_mut().expect("pushed")
                }
            };
            totals.requests += 1;
            totals.failed += i64::from(e.failed);
            totals.server_ns += (e.server_seconds * 1e9).round() as i64;
            totals.client_ns += (e.client_seconds * 1e9).round() as i64;
        }
        for u in unpaired {
            let (side, service) = match u {
                Unpaired::Client(s) => ("client", s),
                Unpaired::Server(s) => ("server", s),
            };
            let key = SeriesRef {
                tenant,
                name: "traces_service_graph_unpaired_spans_total",
                labels: &[(side, &service)],
            };
            registry.add(&key, 1.0, now_ms);
        }
    }

    /// Counts a span that arrived after its trace was decided: a client or server side
    /// the graph drops, as it can no longer be paired.
    pub fn observe_late(&self, registry: &mut Registry, span: &Span, now_ms: i64) {
        let side = if is_client_side(span) {
            "client"
        } else if is_server_side(span) {
            "server"
        } else {
            return;
        };
        if span.service.is_empty() {
            return;
        }
        let key = SeriesRef {
            tenant: &span.tenant,
            name: "traces_service_graph_dropped_spans_total",
            labels: &[(side, &span.service)],
        };
        registry.add(&key, 1.0, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, service: &str, kind: &str, ms: i64) -> Span {
        Span {
            span_id: id.into(),
            parent_span_id: parent.into(),
            service: service.into(),
            kind: kind.into(),
            start_ns: 0,
            end_ns: ms * 1_000_000,
            status_code: "Unset".into(),
            tenant: "t".into(),
            ..Span::default()
        }
    }

    fn graph() -> ServiceGraph {
        ServiceGraph {
            buckets: vec![0.1, 1.0],
            peer_attributes: vec!["peer.service".into(), "db.name".into(), "db.system".into()],
        }
    }

    #[test]
    fn late_client_and_server_spans_are_dropped_sides() {
        let mut r = Registry::default();
        let g = graph();
        for s in [
            span("1", "0", "shop", "Server", 1),
            span("2", "1", "shop", "Client", 1),
            span("3", "1", "shop", "Consumer", 1),
            span("4", "1", "shop", "Internal", 1),
            span("5", "1", "", "Server", 1),
        ] {
            g.observe_late(&mut r, &s, 10);
        }
        let dropped = |side: &str| {
            r.counter(&SeriesRef {
                tenant: "t",
                name: "traces_service_graph_dropped_spans_total",
                labels: &[(side, "shop")],
            })
        };
        assert_eq!(dropped("server"), Some(2.0));
        assert_eq!(dropped("client"), Some(1.0));
        assert_eq!(
            r.len(),
            2,
            "internal spans and spans without a service are not counted"
        );
    }

    #[test]
    fn pairs_clients_with_servers_and_makes_virtual_nodes() {
        let mut db = span("4", "3", "orders", "Client", 5);
        db.attrs.insert("db.system".into(), "postgresql".into());
        let mut ext = span("5", "3", "orders", "Client", 7);
        ext.attrs.insert("peer.service".into(), "stripe".into());
        let mut failed = span("3", "2", "orders", "Server", 30);
        failed.status_code = "Error".into();
        let spans = vec![
            span("1", "", "frontend", "Server", 50),
            span("2", "1", "frontend", "Client", 40),
            failed,
            db,
            ext,
            span("6", "1", "frontend", "Client", 3),
            span("8", "77", "billing", "Server", 3),
            span("9", "3", "orders", "Producer", 1),
            span("10", "9", "mailer", "Consumer", 2),
        ];
        let (edges, unpaired) = graph().edges(&spans);
        let got: Vec<(&str, &str, &str, bool)> = edges
            .iter()
            .map(|e| {
                (
                    e.client.as_str(),
                    e.server.as_str(),
                    e.connection_type,
                    e.failed,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("frontend", "orders", "", true),
                ("orders", "postgresql", "database", false),
                ("orders", "stripe", "virtual_node", false),
                ("orders", "mailer", "messaging_system", false),
                ("user", "frontend", "virtual_node", false),
            ]
        );
        assert_eq!(edges[0].server_seconds, 0.03);
        assert_eq!(edges[0].client_seconds, 0.04);
        assert_eq!(edges[1].server_seconds, 0.005);
        assert_eq!(
            unpaired,
            vec![
                Unpaired::Client("frontend".into()),
                Unpaired::Server("billing".into())
            ]
        );
    }
}
