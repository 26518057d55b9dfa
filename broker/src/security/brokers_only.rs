//! The internal services' own check, request by request: with TLS on, a call to `raft.v1` or
//! `cluster.v1` must come over a connection whose certificate names a broker. On an internal
//! listener the handshake has refused everyone else already; a broker serving everything on one
//! listener (no `internal_listen`) has only this check between a client certificate and its
//! Raft groups.

use super::incoming::ConnectionInfo;
use super::tls::principal_matches;
use std::sync::Arc;
use tonic::{Request, Status};

/// A tonic interceptor admitting brokers only (everyone when the broker runs without TLS: its
/// internal services are then only as private as the network they are bound to).
#[derive(Clone)]
pub struct BrokersOnly {
    principals: Option<Arc<Vec<String>>>,
}

impl BrokersOnly {
    /// Admits certificates whose principal matches `principals`; `None` (no TLS) admits all.
    pub fn new(principals: Option<Vec<String>>) -> BrokersOnly {
        BrokersOnly {
            principals: principals.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for BrokersOnly {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(principals) = &self.principals else {
            return Ok(request);
        };
        let principal = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(ConnectionInfo::principal);
        match principal {
            Some(principal) if principal_matches(principals, principal) => Ok(request),
            Some(principal) => Err(Status::permission_denied(format!(
                "the internal API serves brokers only; principal {principal:?} is not one"
            ))),
            None => Err(Status::permission_denied(
                "the internal API serves brokers only; the caller presented no certificate",
            )),
        }
    }
}
