//! A TCP proxy in front of a broker that tests control: cut every connection, or let requests
//! through and lose the next gRPC response — the connection drops just as the broker's answer
//! starts, so the client cannot tell whether its request took effect.
//!
//! To find "the answer starts" the broker→client direction is relayed frame by frame (HTTP/2
//! frames: a 9-byte header with a 24-bit length and a type); a HEADERS frame on a request stream
//! is the first byte of a response, and a unary gRPC handler sends it only once it is done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_HEADERS: u8 = 0x1;

#[derive(Default)]
struct Faults {
    open: AtomicBool,
    lose_next_response: AtomicBool,
    responses_lost: AtomicUsize,
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

async fn relay(inbound: TcpStream, outbound: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut broker_read, mut broker_write) = outbound.into_split();
    let requests = async move {
        let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
        let _ = broker_write.shutdown().await;
    };
    let responses = async move {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let mut payload = Vec::new();
        loop {
            if broker_read.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            payload.resize(length, 0);
            if broker_read.read_exact(&mut payload).await.is_err() {
                return;
            }
            let starts_a_response = header[3] == FRAME_TYPE_HEADERS && stream != 0;
            if starts_a_response
                && faults
                    .lose_next_response
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                faults.responses_lost.fetch_add(1, Ordering::SeqCst);
                return; // dropping both halves closes the connection
            }
            if client_write.write_all(&header).await.is_err() || client_write.write_all(&payload).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection.
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}
