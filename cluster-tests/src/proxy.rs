//! A TCP proxy in front of a broker that tests control: cut every connection, slow the link
//! (every byte, both ways, arrives a set delay after it was sent — latency, not a bandwidth
//! cap), or let requests through and lose the next gRPC response — the connection drops just as
//! the broker's answer starts, so the client cannot tell whether its request took effect.
//!
//! To find "the answer starts" the broker→client direction is relayed frame by frame (HTTP/2
//! frames: a 9-byte header with a 24-bit length and a type); a HEADERS frame on a request stream
//! is the first byte of a response, and a unary gRPC handler sends it only once it is done.
//! Over TLS the proxy sees only records (a 5-byte header with a 16-bit length): it relays them
//! one by one, and a lost response is the next application-data record the broker sends once the
//! fault is armed — a response most of the time, sometimes an HTTP/2 control frame; either way
//! the connection drops with requests in flight whose outcome the client cannot know.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_HEADERS: u8 = 0x1;
const TLS_RECORD_HEADER_LEN: usize = 5;
/// A TLS record carrying a handshake message: how a TLS server's first bytes begin (an HTTP/2
/// server's begin with a SETTINGS frame's length, whose first byte is 0).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const TLS_APPLICATION_DATA_RECORD: u8 = 0x17;

#[derive(Default)]
struct Faults {
    open: AtomicBool,
    lose_next_response: AtomicBool,
    responses_lost: AtomicUsize,
    delay_ms: AtomicU64,
}

impl Faults {
    fn due(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }
}

/// A proxy listening on its own loopback port, relaying to one target.
pub struct FaultProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    faults: Arc<Faults>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts relaying to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let address = listener.local_addr().expect("proxy address");
        let faults = Arc::new(Faults::default());
        faults.open.store(true, Ordering::SeqCst);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_faults, accept_connections) = (Arc::clone(&faults), Arc::clone(&connections));
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !accept_faults.open.load(Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let relay = tokio::spawn(relay(inbound, outbound, Arc::clone(&accept_faults)));
                accept_connections.lock().expect("connection list").push(relay);
            }
        });
        FaultProxy {
            address,
            faults,
            connections,
            acceptor,
        }
    }

    /// Drops every connection and refuses new ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.faults.open.store(false, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.faults.open.store(true, Ordering::SeqCst);
    }

    /// Delays everything relayed from now on by `delay` (zero: no delay), on open connections
    /// too.
    pub fn set_delay(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis().min(u128::from(u64::MAX)) as u64, Ordering::SeqCst);
    }

    /// The next response to start is lost: its connection drops instead.
    pub fn lose_next_response(&self) {
        self.faults.lose_next_response.store(true, Ordering::SeqCst);
    }

    /// Whether a response is still waiting to be lost.
    pub fn response_loss_pending(&self) -> bool {
        self.faults.lose_next_response.load(Ordering::SeqCst)
    }

    /// Responses lost so far.
    pub fn responses_lost(&self) -> usize {
        self.faults.responses_lost.load(Ordering::SeqCst)
    }

    fn drop_connections(&self) {
        for relay in self.connections.lock().expect("connection list").drain(..) {
            relay.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.drop_connections();
    }
}

/// Bytes to write once they are due: what a slow link has in flight.
type Delayed = tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;

/// Writes what arrives on the returned sender to `out`, each chunk when it is due.
fn delayed_writer<W: AsyncWrite + Unpin>(mut out: W) -> (Delayed, impl std::future::Future<Output = ()>) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if out.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = out.shutdown().await;
    };
    (sender, writer)
}

async fn relay_requests<R: AsyncRead + Unpin>(mut from: R, to: Delayed, faults: Arc<Faults>) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 || to.send((faults.due(), buffer[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Whether to drop the connection instead of relaying a unit that starts a response.
fn loses(faults: &Faults, starts_a_response: bool) -> bool {
    let lost = starts_a_response
        && faults
            .lose_next_response
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    if lost {
        faults.responses_lost.fetch_add(1, Ordering::SeqCst);
    }
    lost
}

async fn relay_responses<R: AsyncRead + Unpin>(mut from: R, to: Delayed, faults: Arc<Faults>) {
    let mut first = [0u8; 1];
    if from.read_exact(&mut first).await.is_err() {
        return;
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return relay_tls_records(first[0], from, to, faults).await;
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0] = first[0];
    let mut have = 1;
    loop {
        if from.read_exact(&mut header[have..]).await.is_err() {
            return;
        }
        have = 0;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut frame = vec![0u8; FRAME_HEADER_LEN + length];
        frame[..FRAME_HEADER_LEN].copy_from_slice(&header);
        if from.read_exact(&mut frame[FRAME_HEADER_LEN..]).await.is_err() {
            return;
        }
        let starts_a_response = header[3] == FRAME_TYPE_HEADERS && stream != 0;
        if loses(&faults, starts_a_response) {
            return; // ending the relay closes the connection
        }
        if to.send((faults.due(), frame)).is_err() {
            return;
        }
    }
}

/// The broker→client direction of a TLS connection, record by record (`first` is the first
/// record's type byte, already read).
async fn relay_tls_records<R: AsyncRead + Unpin>(first: u8, mut from: R, to: Delayed, faults: Arc<Faults>) {
    let mut header = [0u8; TLS_RECORD_HEADER_LEN];
    header[0] = first;
    let mut have = 1;
    loop {
        if from.read_exact(&mut header[have..]).await.is_err() {
            return;
        }
        have = 0;
        let length = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut record = vec![0u8; TLS_RECORD_HEADER_LEN + length];
        record[..TLS_RECORD_HEADER_LEN].copy_from_slice(&header);
        if from.read_exact(&mut record[TLS_RECORD_HEADER_LEN..]).await.is_err() {
            return;
        }
        if loses(&faults, header[0] == TLS_APPLICATION_DATA_RECORD) {
            return;
        }
        if to.send((faults.due(), record)).is_err() {
            return;
        }
    }
}

async fn relay(inbound: TcpStream, outbound: TcpStream, faults: Arc<Faults>) {
    let (client_read, client_write) = inbound.into_split();
    let (broker_read, broker_write) = outbound.into_split();
    let (to_broker, broker_writer) = delayed_writer(broker_write);
    let (to_client, client_writer) = delayed_writer(client_write);
    let requests = relay_requests(client_read, to_broker, Arc::clone(&faults));
    let responses = relay_responses(broker_read, to_client, faults);
    // Whichever direction ends first ends the connection (what is still delayed is lost, as
    // on a link that goes down).
    tokio::select! {
        _ = async { tokio::join!(requests, broker_writer) } => {}
        _ = async { tokio::join!(responses, client_writer) } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: with a delay, a round trip takes at least twice it
    /// (there and back); a cut link refuses new connections.
    #[tokio::test]
    async fn delayed_and_cut_links() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(target).await;
        proxy.set_delay(Duration::from_millis(100));
        let mut socket = TcpStream::connect(proxy.address).await.unwrap();
        // Responses are relayed as HTTP/2 frames: send one (type DATA, stream 1, 4 bytes).
        let frame = [0, 0, 4, 0, 0, 0, 0, 0, 1, b'p', b'i', b'n', b'g'];
        let started = tokio::time::Instant::now();
        socket.write_all(&frame).await.unwrap();
        let mut echoed = [0u8; 13];
        socket.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, frame);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );

        proxy.cut();
        let mut refused = TcpStream::connect(proxy.address).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            refused.read(&mut byte).await.unwrap_or(0),
            0,
            "a cut link closes connections"
        );
    }
}
