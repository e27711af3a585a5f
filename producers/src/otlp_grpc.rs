//! OTLP/gRPC (port 4317): the logs, traces and metrics services, answering as the OTLP
//! specification says (`InvalidArgument` for bad data, not retried; `Unavailable` when the
//! broker is down, retried by SDKs), with gzip accepted and the message size bounded by
//! `collector.max_body_bytes`. The work is the same as over HTTP.

use std::net::SocketAddr;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use obs_runtime::auth::{Access, Auth, Denied};
use obs_runtime::tls::{Alpn, ServerTls};

use crate::error::CollectorError;
use crate::server::{
    AppState, TENANT_HEADER, publish_otlp_logs, publish_otlp_metrics, publish_otlp_traces,
};

/// The three OTLP services over one shared state, behind the credentials of `[auth]`.
#[derive(Clone)]
struct Otlp(AppState, Auth);

fn status(e: CollectorError) -> Status {
    metrics::counter!("obs_collector_rejected_total", "reason" => e.reason()).increment(1);
    let message = e.to_string();
    match e {
        CollectorError::Unavailable(_) | CollectorError::Overloaded(_) => {
            Status::unavailable(message)
        }
        CollectorError::TooLarge { .. } | CollectorError::Limit { .. } => {
            Status::resource_exhausted(message)
        }
        _ => Status::invalid_argument(message),
    }
}

impl Otlp {
    /// Room in the collector's byte budget for this call's message, held while it is
    /// published (as the HTTP listeners hold it for a body).
    async fn admit<T: prost::Message>(
        &self,
        req: &Request<T>,
    ) -> Result<crate::admission::Room, Status> {
        self.0
            .admission
            .admit(req.get_ref().encoded_len())
            .await
            .map_err(status)
    }

    /// The tenant from the `x-scope-orgid` metadata, or the default; with auth on, the
    /// `authorization` metadata must allow writing for it (else UNAUTHENTICATED or
    /// PERMISSION_DENIED).
    fn tenant<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let mut headers = axum::http::HeaderMap::new();
        for name in [TENANT_HEADER, "authorization"] {
            if let Some(v) = req.metadata().get(name.to_ascii_lowercase().as_str())
                && let Ok(v) = axum::http::HeaderValue::from_bytes(v.as_bytes())
            {
                headers.insert(name, v);
            }
        }
        self.1.admit(&mut headers, Access::Write).map_err(|d| {
            d.count();
            match d {
                Denied::Unauthenticated(m) => Status::unauthenticated(m),
                Denied::Forbidden(m) => Status::permission_denied(m),
            }
        })?;
        crate::server::tenant(&headers, &self.0.cfg.default_tenant).map_err(status)
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let tenant = self.tenant(&req)?;
        let _room = self.admit(&req).await?;
        let r = publish_otlp_logs(&self.0, req.into_inner(), &tenant).await;
        r.map_err(status)?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = self.tenant(&req)?;
        let _room = self.admit(&req).await?;
        let r = publish_otlp_traces(&self.0, req.into_inner(), &tenant).await;
        r.map_err(status)?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = self.tenant(&req)?;
        let _room = self.admit(&req).await?;
        let r = publish_otlp_metrics(&self.0, req.into_inner(), &tenant).await;
        r.map_err(status)?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Serves OTLP/gRPC on `addr` (over TLS with `tls`) until a shutdown is asked for (calls in
/// flight finish).
pub async fn serve(
    addr: &str,
    state: AppState,
    auth: Auth,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("collector.otlp_grpc_listen {addr:?} is not host:port"))?;
    let limit = state.cfg.max_body_bytes;
    obs_runtime::auth::warn_if_open(&auth, addr, "collector OTLP/gRPC");
    let otlp = Otlp(state, auth);
    let server = tonic::transport::Server::builder()
        .add_service(
            LogsServiceServer::new(otlp.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            TraceServiceServer::new(otlp.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            MetricsServiceServer::new(otlp)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        );
    let Some(tls) = tls else {
        tracing::info!("collector OTLP/gRPC listening on {addr}");
        return server
            .serve_with_shutdown(sock, obs_runtime::shutdown::wait())
            .await
            .with_context(|| format!("serving OTLP/gRPC on {addr}"));
    };
    let tcp = tokio::net::TcpListener::bind(sock)
        .await
        .with_context(|| format!("collector OTLP/gRPC: cannot listen on {addr}"))?;
    tracing::info!("collector OTLP/gRPC listening on {addr} (TLS)");
    let incoming = futures::stream::unfold(tls.listen(tcp, Alpn::Grpc), |mut l| async move {
        let (io, _) = l.next().await?;
        Some((Ok::<_, std::io::Error>(TlsConnection(io)), l))
    });
    server
        .serve_with_incoming_shutdown(incoming, obs_runtime::shutdown::wait())
        .await
        .with_context(|| format!("serving OTLP/gRPC over TLS on {addr}"))
}

/// A TLS connection as tonic takes it from an incoming stream (tonic knows only its own TLS
/// types).
struct TlsConnection(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
