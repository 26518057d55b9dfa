//! The one error of parsing a webhook body. Every variant names where in the body it is, as a
//! path from the body's root: `$[2].email`, `$.event-data.timestamp`,
//! `$.Message.bounce.bouncedRecipients[0].emailAddress`, `mandrill_events[0].msg.email`.
//! The HTTP layer answers 400 with this message; none of these is worth a provider's retry.

/// Why a body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body (or a JSON string inside it) is not JSON.
    #[error("{path}: not valid JSON: {detail}")]
    InvalidJson {
        /// Where the JSON text was (`$` for the body itself).
        path: String,
        /// serde_json's message, with line and column.
        detail: String,
    },
    /// A required field is absent or `null`.
    #[error("{path}: missing")]
    Missing {
        /// The field's path.
        path: String,
    },
    /// A field has the wrong JSON type.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        /// The field's path.
        path: String,
        /// What the parser needs there.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the right type but an unusable value (a bad time, an empty address).
    #[error("{path}: {detail}")]
    InvalidValue {
        /// The field's path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A form-encoded body lacks the field that carries the events.
    #[error("form field {field:?} missing from the body")]
    MissingFormField {
        /// The form field's name.
        field: &'static str,
    },
}

impl ParseError {
    /// The path of the offending field or text.
    pub fn path(&self) -> &str {
        match self {
            ParseError::InvalidJson { path, .. }
            | ParseError::Missing { path }
            | ParseError::WrongType { path, .. }
            | ParseError::InvalidValue { path, .. } => path,
            ParseError::MissingFormField { field } => field,
        }
    }
}
