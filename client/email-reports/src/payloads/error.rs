//! The one error of building a webhook body: the events asked for cannot be written so that
//! the provider's parser reads them back as they are. Not retriable; the caller's input is wrong.

use crate::event::{EventKind, Provider};

/// Why a body was not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The provider has no webhook event its parser reads as this kind (see
    /// [`super::supports`]).
    #[error("{provider} has no webhook event for kind {kind}")]
    UnsupportedKind {
        /// The provider asked for.
        provider: Provider,
        /// The kind it cannot express.
        kind: EventKind,
    },
    /// Too few or too many events for one body of this provider.
    #[error("{provider} posts 1 to {max} events per body, not {count}")]
    BatchSize {
        /// The provider asked for.
        provider: Provider,
        /// Events given.
        count: usize,
        /// The most it puts in one body (`usize::MAX`: no count limit).
        max: usize,
    },
    /// A field of one event would not come back from the parser as it is.
    #[error("event {index}: {field}: {detail}")]
    InvalidEvent {
        /// The event's position in the batch.
        index: usize,
        /// The [`super::OutgoingEvent`] field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Two events of one batch share a `provider_event_id`.
    #[error("event {index}: provider_event_id {id:?} is already event {first}'s")]
    DuplicateEventId {
        /// The later event's position.
        index: usize,
        /// The earlier event's position.
        first: usize,
        /// The repeated id.
        id: String,
    },
    /// The carrier keys are unusable (empty, equal, or a field name the provider reserves).
    #[error("carrier keys: {detail}")]
    CarrierKeys {
        /// What is wrong with them.
        detail: String,
    },
}
