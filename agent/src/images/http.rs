//! The registry client's transport: hyper's pooled HTTP/1 client over TCP or rustls, with the
//! pull-inactivity bound on every connect, and the system's CA certificates plus the agent's own.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Debian's bundle of the system's trusted CA certificates.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Nothing came for the pull-inactivity timeout; Display is what a task's stoppedReason shows.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no progress for {} s", secs(*.0))]
pub struct NoProgress(pub Duration);

/// Seconds as a person reads them: `60`, or `0.3` below a second.
pub fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    NoProgress(#[from] NoProgress),
    #[error("{0}")]
    Bad(String),
}

/// A TCP connection, in TLS or not.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects by the URI's scheme (TLS for https, with SNI and HTTP/1.1 by ALPN), the whole of it
/// (resolution, TCP, handshake) bounded by the inactivity timeout.
#[derive(Clone)]
pub struct Connector {
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.timeout);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| ConnectError::Bad(format!("{uri} names no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                other => {
                    return Err(ConnectError::Bad(format!(
                        "unsupported URL scheme {other:?} in {uri}"
                    )))
                }
            };
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                if !https {
                    return Ok(Stream::Plain(tcp));
                }
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| ConnectError::Bad(format!("host {host:?}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok(Stream::Tls(Box::new(tls)))
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(NoProgress(timeout).into()),
            }
        })
    }
}

/// The TLS client configuration: the system's CAs (if the bundle is there) and `ca_file`'s.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if Path::new(SYSTEM_CA_FILE).exists() {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(SYSTEM_CA_FILE)
            .map_err(|e| format!("{SYSTEM_CA_FILE}: {e}"))?
            .filter_map(Result::ok)
            .collect();
        // The system bundle may hold a certificate webpki cannot parse; the rest still count.
        roots.add_parsable_certificates(certs);
    }
    if let Some(path) = ca_file {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("registry CA file {}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("registry CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("registry CA file {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "registry CA file {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The next chunk of a body, bounded by the inactivity timeout; `None` at the end. Trailers are
/// skipped.
pub async fn next_chunk(
    body: &mut Incoming,
    timeout: Duration,
) -> Result<Option<Bytes>, ChunkError> {
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ChunkError::NoProgress(NoProgress(timeout))),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(ChunkError::Http(e)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    NoProgress(NoProgress),
    #[error("{}", chain(.0))]
    Http(hyper::Error),
}

/// An error and its causes as one line (`client error (Connect): Connection refused` reads as
/// `Connection refused (os error 111)`): wrappers that only say "client error" are dropped.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let wrapper = err.source().is_some()
            && (text.starts_with("client error") || text.starts_with("error trying to connect"));
        if !wrapper && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The [`NoProgress`] somewhere in an error's causes.
pub fn find_no_progress(e: &(dyn std::error::Error + 'static)) -> Option<NoProgress> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(n) = err.downcast_ref::<NoProgress>() {
            return Some(*n);
        }
        if let Some(ConnectError::NoProgress(n)) = err.downcast_ref::<ConnectError>() {
            return Some(*n);
        }
        cur = err.source();
    }
    None
}
