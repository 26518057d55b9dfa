//! Who may talk to a broker, and how: transport security for its two listeners.
//!
//! - [`tls`]: the `[tls]` settings, the rustls configurations of the client and internal
//!   listeners (the internal one admits only certificates whose principal names a broker), the
//!   certificate a broker presents when it dials a peer, and reloading certificates from disk.
//! - [`incoming`]: the accept loop that turns a listener into the connections a tonic server
//!   serves, with each TLS handshake run beside it (a slow or hostile client holds no accept).
//! - [`brokers_only`]: the same rule checked on every internal call, for a broker that serves
//!   everything on one listener.
//! - [`identity`]: who calls the client services (a session token's principal, else the client
//!   certificate's), and the `[auth]` settings.
//! - [`acl`]: access-control rules (pure) and [`access`]: one request's rights under them.
//! - [`tokens`]: session tokens earned by a SCRAM exchange, checked by every broker.
//! - [`local_ca`]: a throwaway certificate authority for `broker dev --tls`, the benchmarks
//!   and the tests.

pub mod access;
pub mod acl;
pub mod brokers_only;
pub mod identity;
pub mod incoming;
pub mod local_ca;
pub mod tls;
pub mod tokens;
