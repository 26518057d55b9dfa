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
            ClientError::Unreachable { .. } => None,
        }
    }

    /// Whether retrying the same call may succeed (leader moved, timeout, unreachable broker).
    pub fn is_retriable(&self) -> bool {
        match self {
            // The list of retriable codes is shared with the broker (`ErrorCode::is_retriable`).
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Unreachable { .. } => true,
            ClientError::RetriesExhausted { .. } => false,
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
