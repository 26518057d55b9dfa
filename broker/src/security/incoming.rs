//! A listener's connections as a tonic server takes them: plain TCP, or TLS with the handshake
//! run in a task of its own, so one slow or hostile client holds up no other accept. Accept
//! errors (EMFILE among them) are logged and retried after a pause instead of ending the server.
//! Every connection is `TCP_NODELAY`, as the clients' and peers' ends are.

use super::tls::{Acceptor, ClientIdentity};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One accepted connection.
pub enum Connection {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, handshake done, its client judged.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, ClientIdentity),
}

/// What a request's extensions carry about its connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Who the peer proved to be: anonymous (plaintext, or TLS without a certificate), a
    /// certificate's principal, or refused (with the reason every request is answered with).
    pub identity: ClientIdentity,
}

impl ConnectionInfo {
    /// The principal of a valid certificate the peer presented.
    pub fn principal(&self) -> Option<&str> {
        match &self.identity {
            ClientIdentity::Principal(principal) => Some(principal),
            _ => None,
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            Connection::Plain(stream) => ConnectionInfo {
                remote: stream.peer_addr().ok(),
                identity: ClientIdentity::Anonymous,
            },
            Connection::Tls(stream, identity) => ConnectionInfo {
                remote: stream.get_ref().0.peer_addr().ok(),
                identity: identity.clone(),
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Connection::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Connection::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    // hyper writes a response's header and body frames as one vectored write when the stream
    // supports it, and copies them into one buffer otherwise.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(stream) => stream.is_write_vectored(),
            Connection::Tls(stream, _) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Connection::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Connection::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` (named `name` in logs), through `tls` when given. The accept
/// loop ends when the server drops the stream.
pub fn connections(
    listener: TcpListener,
    tls: Option<Acceptor>,
    name: &'static str,
) -> ReceiverStream<io::Result<Connection>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, listener = name, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            // Without it, the first answer on a new connection waited for the client's delayed
            // ACK: every connection's first request took 43 ms (docs/benchmarks.md, TLS).
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
            let Some(tls) = &tls else {
                if sender.send(Ok(Connection::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, check) = tls.current();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream.get_ref().1.peer_certificates().unwrap_or_default();
                        let identity = match &check {
                            Some(check) => check.judge(certs),
                            // The internal listener: its handshake admitted brokers only.
                            None => certs
                                .first()
                                .and_then(super::tls::principal_of)
                                .map_or(ClientIdentity::Anonymous, ClientIdentity::Principal),
                        };
                        if let ClientIdentity::Refused(reason) = &identity {
                            tracing::info!(%remote, listener = name, reason, "client certificate refused");
                        }
                        let _ = sender.send(Ok(Connection::Tls(Box::new(stream), identity))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, %remote, listener = name, "TLS handshake refused")
                    }
                    Err(_) => tracing::warn!(%remote, listener = name, "TLS handshake not completed in time"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
