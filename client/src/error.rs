//! The client's error type.

use proto::v1::ErrorCode;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error code.
    #[error("{code:?}: {message}")]
    Broker {
        /// The wire error code (see docs/error-codes.md).
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// No broker could be reached, or a connection failed.
    #[error("cannot reach {address}: {message}")]
    Unreachable {
        /// The address tried.
        address: String,
        /// What failed.
        message: String,
    },
    /// A broker and this client did not accept each other: the client refused the broker's
    /// certificate (an unknown CA, a wrong name) or the broker refused the client's (none
    /// presented where one is required, expired, from an unknown CA) or its principal. Not
    /// retried: the same credentials fail the same way.
    #[error("authentication with {address} failed: {message}")]
    Authentication {
        /// The address tried.
        address: String,
        /// The reason, as the refusing side gave it.
        message: String,
    },
    /// The client's own settings are unusable (a certificate file that cannot be read, an
    /// unknown `security.protocol`).
    #[error("client configuration: {0}")]
    Config(String),
    /// Retries of a retriable error ran out of time.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// The broker error code behind this error, looking through exhausted retries.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::RetriesExhausted { last, .. } => last.code(),
            ClientError::Unreachable { .. } | ClientError::Authentication { .. } | ClientError::Config(_) => None,
        }
    }

    /// Whether retrying the same call may succeed (leader moved, timeout, unreachable broker).
    pub fn is_retriable(&self) -> bool {
        match self {
            // The list of retriable codes is shared with the broker (`ErrorCode::is_retriable`).
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Unreachable { .. } => true,
            ClientError::RetriesExhausted { .. } | ClientError::Authentication { .. } | ClientError::Config(_) => false,
        }
    }

    /// What a failed call to `address` says: an authentication failure when the broker
    /// answered UNAUTHENTICATED or rustls refused the handshake, an authorisation failure when
    /// it answered PERMISSION_DENIED, else the
    /// broker was unreachable (with every cause in the message: tonic's own says only
    /// "transport error").
    pub(crate) fn from_transport(address: &str, status: &tonic::Status) -> ClientError {
        match status.code() {
            tonic::Code::Unauthenticated => {
                return ClientError::Authentication {
                    address: address.to_string(),
                    message: status.message().to_string(),
                }
            }
            // Authenticated, but not allowed (a call whose answer has no error field of its
            // own, as ListReassignments).
            tonic::Code::PermissionDenied => {
                return ClientError::Broker {
                    code: ErrorCode::ClusterAuthorizationFailed,
                    message: status.message().to_string(),
                }
            }
            _ => {}
        }
        let mut message = status.message().to_string();
        let mut tls = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
        while let Some(error) = cause {
            message.push_str(": ");
            message.push_str(&error.to_string());
            let inner = error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            if let Some(rustls_error) = error.downcast_ref::<rustls::Error>().or(inner) {
                tls = Some(rustls_error.to_string());
            }
            cause = error.source();
        }
        match tls {
            Some(reason) => ClientError::Authentication {
                address: address.to_string(),
                message: reason,
            },
            None => ClientError::Unreachable {
                address: address.to_string(),
                message,
            },
        }
    }

    pub(crate) fn check(code: i32, message: &str) -> Result<(), ClientError> {
        match ErrorCode::try_from(code).unwrap_or(ErrorCode::InvalidRequest) {
            ErrorCode::None => Ok(()),
            code => Err(ClientError::Broker {
                code,
                message: message.to_string(),
            }),
        }
    }
}
