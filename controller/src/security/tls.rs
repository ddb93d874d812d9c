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

/// At most this many handshakes are under way at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 512;

/// The connections accepted on `listener`, each after its handshake (at most
/// [`HANDSHAKE_TIMEOUT`], in its own task, so a slow or silent client holds up no other:
/// `tls::tests::a_silent_client_holds_up_no_other`). At most [`MAX_HANDSHAKES`] run at once. A
/// failed handshake is logged and dropped. An accept error (out of file descriptors) is logged,
/// and accepting resumes when a handshake ends or after a second, not in a busy loop.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let ended = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        drop(permit);
                        let _ = tokio::time::timeout(Duration::from_secs(1), ended.notified()).await;
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
            let ended = ended.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                ended.notify_waiters();
                match handshake {
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

    #[tokio::test]
    async fn a_silent_client_holds_up_no_other() {
        use tokio_stream::StreamExt as _;
        let ca = crate::security::pki::Ca::generate().expect("a CA");
        let id = ca
            .server_identity(&["localhost".into()])
            .expect("an identity");
        let config = server_config(&id.cert_pem, &id.key_pem, ca.cert_pem()).expect("config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let mut accepted = incoming(listener, Arc::new(config));
        // Connected, and never a byte: its handshake waits out HANDSHAKE_TIMEOUT.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
            roots.add(c.expect("the CA")).expect("a root");
        }
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        // Half the handshake timeout: the silent client must not be waited for.
        let within = HANDSHAKE_TIMEOUT / 2;
        let (client, server) = tokio::time::timeout(within, async {
            tokio::join!(connector.connect(name, tcp), accepted.next())
        })
        .await
        .expect("the second client's handshake ended before the silent one's timeout");
        let client = client.expect("the client's handshake");
        let server = server.expect("a connection").expect("its handshake");
        // The AWS SDKs' ALPN is taken: HTTP/1.1 on the port gRPC serves.
        assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}
