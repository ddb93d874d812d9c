//! TLS on the controller's port, terminated here rather than by tonic (issue 13): one port
//! serves gRPC (HTTP/2: `berth`, the agents) and AWS JSON 1.1 (HTTP/1.1: the aws CLI, the SDKs),
//! so the handshake offers both ALPN protocols. tonic's own TLS offers only `h2`, and a client
//! that asks for `http/1.1` alone (urllib3, under botocore) is then refused in the handshake.
//! The client certificate (an agent's) is requested, not required, as before; the link still
//! reads it through tonic's `peer_certs` (`TlsConnectInfo`).

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input did not parse.
    #[error("TLS {what}: {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The ALPN protocols offered: gRPC's and AWS JSON 1.1's.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long a client has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's configuration: its certificate and key, client certificates optional and
/// checked against `ca_pem`, both ALPN protocols.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            source,
        })?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|source| TlsError::Pem { what: "CA", source })?;
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            // API callers and enrolling agents come without a client certificate; the link
            // refuses its other calls without one.
            .allow_unauthenticated()
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The connections accepted on `listener`, each after its handshake (at most
/// [`HANDSHAKE_TIMEOUT`], in its own task, so a slow client holds up no other). A failed
/// handshake is logged and dropped; an accept error is logged and accepting goes on.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            // Small request/response messages: Nagle's algorithm would hold them back for the
            // peer's delayed ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, %peer, "TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_offers_h2_and_http_1_1() {
        let ca = crate::security::pki::Ca::generate().expect("a CA");
        let id = ca
            .server_identity(&["localhost".into()])
            .expect("an identity");
        let config = server_config(&id.cert_pem, &id.key_pem, ca.cert_pem()).expect("config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(matches!(
            server_config("junk", &id.key_pem, ca.cert_pem()),
            Err(TlsError::Pem { .. }) | Err(TlsError::Config(_))
        ));
    }
}
