//! What goes in and what comes out of a send: the [`ProducerRecord`] an application builds, and
//! the [`DeliveryFuture`] that resolves to its [`RecordMetadata`] (or a [`ProduceError`]).

use super::error::ProduceError;
use bytes::Bytes;
use proto::record_batch::RecordHeader;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (murmur2 of the key, or sticky).
    pub partition: Option<u32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<RecordHeader>,
    /// Timestamp in ms since the Unix epoch; `None`: the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// To a given partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// With a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(RecordHeader {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// With a timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared by every record of the batch).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset; `None` with `acks = 0`, or for a batch the broker reports as written long ago
    /// (DUPLICATE_SEQUENCE) whose offset it no longer knows.
    pub offset: Option<u64>,
    /// The record's timestamp.
    pub timestamp: i64,
}

/// Resolves to where the record was written, or why it was not.
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl DeliveryFuture {
    /// The future of the record whose partition task answers on `receiver`.
    pub(super) fn new(receiver: oneshot::Receiver<Result<RecordMetadata, ProduceError>>) -> Self {
        DeliveryFuture { receiver }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(ProduceError::Closed)))
    }
}
