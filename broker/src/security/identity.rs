//! Who is calling the client services: the principal of a session token (`authorization:
//! Bearer …`, earned by a SCRAM exchange) or of the connection's client certificate. Put into the
//! request's extensions as a [`Principal`] for the handlers (user administration now, ACLs
//! next). A connection whose certificate was refused is answered `UNAUTHENTICATED` with the
//! reason (see `tls::Admission`); with authentication required, so is a caller with neither.

use super::incoming::ConnectionInfo;
use super::tls::ClientIdentity;
use super::tokens;
use crate::controller::Controller;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Request, Status};

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// The `[auth]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Every client request must come from a principal: a valid client certificate or a
    /// SCRAM session token. Default false (anonymous clients are served).
    #[serde(default)]
    pub required: bool,
    /// Principals that may do anything, users and ACLs included (Kafka's `super.users`).
    #[serde(default)]
    pub super_users: Vec<String>,
    /// Authorisation: every client request is checked against the ACLs, and what no rule
    /// allows is denied (super users aside). Default false (everything is allowed).
    #[serde(default)]
    pub authorization: bool,
    /// How long a session token is valid (ms); default 3600000 (one hour).
    #[serde(default = "default_token_lifetime_ms")]
    pub token_lifetime_ms: u64,
}

fn default_token_lifetime_ms() -> u64 {
    60 * 60 * 1000
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            required: false,
            super_users: Vec::new(),
            authorization: false,
            token_lifetime_ms: default_token_lifetime_ms(),
        }
    }
}

impl AuthSettings {
    /// Whether the caller of `request` may administer users and ACLs: anyone while neither
    /// authentication nor authorisation is on, else the super users.
    pub fn may_administer<T>(&self, request: &Request<T>) -> bool {
        if !self.required && !self.authorization {
            return true;
        }
        request
            .extensions()
            .get::<Principal>()
            .is_some_and(|principal| self.super_users.contains(&principal.0))
    }
}

/// The interceptor in front of the client services.
#[derive(Clone)]
pub struct Identify {
    controller: Arc<Controller>,
    required: bool,
}

impl Identify {
    /// Identifies callers with the token key in `controller`'s metadata; refuses anonymous
    /// ones when `required`.
    pub fn new(controller: Arc<Controller>, required: bool) -> Identify {
        Identify { controller, required }
    }
}

impl tonic::service::Interceptor for Identify {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.identity.clone())
            .unwrap_or(ClientIdentity::Anonymous);
        if let ClientIdentity::Refused(reason) = identity {
            return Err(Status::unauthenticated(reason));
        }
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_string);
        let principal = match bearer {
            Some(token) => {
                let metadata = self.controller.metadata();
                let key = metadata
                    .token_key
                    .as_ref()
                    .ok_or_else(|| Status::unavailable("this broker does not know the cluster's token key yet"))?;
                let principal = tokens::verify(key, &token, tokens::now_ms()).map_err(|error| {
                    Status::unauthenticated(format!("session token refused ({error}): authenticate again"))
                })?;
                Some(principal)
            }
            None => match identity {
                ClientIdentity::Principal(principal) => Some(principal),
                _ => None,
            },
        };
        match principal {
            Some(principal) => {
                request.extensions_mut().insert(Principal(principal));
            }
            None if self.required => {
                return Err(Status::unauthenticated(
                    "authentication required: present a client certificate or authenticate with SCRAM-SHA-256",
                ))
            }
            None => {}
        }
        Ok(request)
    }
}
