//! Dead letters: a record whose processing failed `max_attempts` times is produced to
//! `<topic>.dlq`, with where it came from and why in its headers, so the consumer can commit
//! past it instead of blocking its partition.
//!
//! ```no_run
//! # async fn run(mut consumer: client::GroupConsumer, producer: client::Producer) -> Result<(), Box<dyn std::error::Error>> {
//! # async fn process(_: &client::ConsumerRecord) -> Result<(), String> { Ok(()) }
//! use client::group::{DeadLetters, Outcome};
//! let mut dead_letters = DeadLetters::new(producer, 3);
//! loop {
//!     for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
//!         while let Outcome::Retry { .. } = dead_letters.handle(&record, process(&record).await).await? {}
//!     }
//!     consumer.commit().await?;
//! }
//! # }
//! ```
//!
//! The dead-letter topic is not created here: create `<topic>.dlq` with the topic (e.g.
//! `broker topic create orders.dlq`); if it is missing, `handle` fails with
//! [`DeadLetterError::MissingTopic`] and the record is not committed past.

use crate::consumer::ConsumerRecord;
use crate::producer::{ProduceError, Producer, ProducerRecord};
use bytes::Bytes;
use proto::record_batch::RecordHeader;
use proto::v1::ErrorCode;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

/// Suffix of a topic's dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";
/// Header: the topic the record was read from.
pub const HEADER_SOURCE_TOPIC: &str = "dlq.source.topic";
/// Header: its partition (decimal text).
pub const HEADER_SOURCE_PARTITION: &str = "dlq.source.partition";
/// Header: its offset (decimal text).
pub const HEADER_SOURCE_OFFSET: &str = "dlq.source.offset";
/// Header: how many times processing failed (decimal text).
pub const HEADER_ATTEMPTS: &str = "dlq.attempts";
/// Header: the last processing error (UTF-8, at most [`MAX_ERROR_BYTES`]).
pub const HEADER_ERROR: &str = "dlq.error";
/// Longest `dlq.error` header value, in bytes; longer errors are cut at a character boundary.
pub const MAX_ERROR_BYTES: usize = 1024;

/// What became of a record handed to [`DeadLetters::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processing succeeded: commit past it.
    Processed,
    /// Processing failed `attempts` times, fewer than the limit: process it again.
    Retry {
        /// Failed attempts so far.
        attempts: u32,
    },
    /// Processing failed too often; the record is in the dead-letter topic: commit past it.
    DeadLettered {
        /// The dead-letter topic.
        topic: String,
        /// Where it was written (`None` with `acks = 0`).
        offset: Option<u64>,
    },
}

impl Outcome {
    /// Whether the consumer may commit past the record.
    pub fn is_done(&self) -> bool {
        !matches!(self, Outcome::Retry { .. })
    }
}

/// Why a record could not be dead-lettered (it must not be committed past).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    /// The dead-letter topic does not exist.
    #[error("dead-letter topic {topic:?} does not exist: create it (e.g. `broker topic create {topic}`)")]
    MissingTopic {
        /// The topic that is missing.
        topic: String,
    },
    /// Producing to the dead-letter topic failed.
    #[error("producing to the dead-letter topic failed: {0}")]
    Produce(#[from] ProduceError),
}

/// Counts failed attempts per record and dead-letters records that reach `max_attempts`.
pub struct DeadLetters {
    producer: Producer,
    attempts: Attempts,
    /// Dead-letter topics seen to exist.
    topics: HashSet<String>,
}

impl DeadLetters {
    /// Dead-letters through `producer` after `max_attempts` failures (at least 1).
    pub fn new(producer: Producer, max_attempts: u32) -> DeadLetters {
        DeadLetters {
            producer,
            attempts: Attempts::new(max_attempts),
            topics: HashSet::new(),
        }
    }

    /// Records one processing attempt of `record` and its `result`: success forgets the
    /// record; a failure below the limit asks for a retry; the failure that reaches the limit
    /// produces the record to `<topic>.dlq` and waits until it is written.
    pub async fn handle<E: Display>(
        &mut self,
        record: &ConsumerRecord,
        result: Result<(), E>,
    ) -> Result<Outcome, DeadLetterError> {
        let key = (record.topic.clone(), record.partition, record.offset);
        let error = match result {
            Ok(()) => {
                self.attempts.forget(&key);
                return Ok(Outcome::Processed);
            }
            Err(error) => error.to_string(),
        };
        let attempts = match self.attempts.fail(&key) {
            Verdict::Retry(attempts) => return Ok(Outcome::Retry { attempts }),
            Verdict::DeadLetter(attempts) => attempts,
        };
        let topic = dead_letter_topic(&record.topic);
        self.ensure_topic(&topic).await?;
        let written = self
            .producer
            .send_and_wait(dead_letter_record(record, attempts, &error))
            .await
            .map_err(|error| match error {
                ProduceError::UnknownTopic { topic, .. } => DeadLetterError::MissingTopic { topic },
                error => DeadLetterError::Produce(error),
            })?;
        self.attempts.forget(&key);
        Ok(Outcome::DeadLettered {
            topic,
            offset: written.offset,
        })
    }

    /// Fails fast on a missing dead-letter topic, instead of the producer's `max_block` wait.
    async fn ensure_topic(&mut self, topic: &str) -> Result<(), DeadLetterError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        let metadata = self
            .producer
            .cluster()
            .metadata(vec![topic.to_string()])
            .await
            .map_err(|error| {
                DeadLetterError::Produce(ProduceError::MetadataUnavailable {
                    topic: topic.to_string(),
                    waited: std::time::Duration::ZERO,
                    last_error: error.to_string(),
                })
            })?;
        let exists = metadata
            .topics
            .iter()
            .any(|t| t.name == topic && t.error == ErrorCode::None as i32);
        if !exists {
            return Err(DeadLetterError::MissingTopic {
                topic: topic.to_string(),
            });
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// The record to produce to the dead-letter topic: the original key, value, headers and
/// timestamp, plus the `dlq.*` headers.
pub fn dead_letter_record(record: &ConsumerRecord, attempts: u32, error: &str) -> ProducerRecord {
    let header = |key: &str, value: String| RecordHeader {
        key: key.to_string(),
        value: Some(Bytes::from(value)),
    };
    let mut headers = record.headers.clone();
    headers.extend([
        header(HEADER_SOURCE_TOPIC, record.topic.clone()),
        header(HEADER_SOURCE_PARTITION, record.partition.to_string()),
        header(HEADER_SOURCE_OFFSET, record.offset.to_string()),
        header(HEADER_ATTEMPTS, attempts.to_string()),
        header(HEADER_ERROR, truncate(error, MAX_ERROR_BYTES).to_string()),
    ]);
    ProducerRecord {
        topic: dead_letter_topic(&record.topic),
        partition: None,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
        timestamp: Some(record.timestamp),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

type RecordKey = (String, u32, u64);

/// What a failed attempt means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Retry(u32),
    DeadLetter(u32),
}

/// Failed attempts per record not yet processed or dead-lettered (pure).
struct Attempts {
    max: u32,
    failed: HashMap<RecordKey, u32>,
}

impl Attempts {
    fn new(max: u32) -> Attempts {
        Attempts {
            max: max.max(1),
            failed: HashMap::new(),
        }
    }

    fn fail(&mut self, key: &RecordKey) -> Verdict {
        let count = self.failed.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count >= self.max {
            Verdict::DeadLetter(*count)
        } else {
            Verdict::Retry(*count)
        }
    }

    fn forget(&mut self, key: &RecordKey) {
        self.failed.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![RecordHeader {
                key: "trace".into(),
                value: Some(Bytes::from_static(b"t-1")),
            }],
        }
    }

    #[test]
    fn dead_letters_on_the_attempt_that_reaches_the_limit() {
        let key = ("orders".to_string(), 2, 41);
        let mut attempts = Attempts::new(3);
        assert_eq!(attempts.fail(&key), Verdict::Retry(1));
        assert_eq!(attempts.fail(&key), Verdict::Retry(2));
        assert_eq!(attempts.fail(&key), Verdict::DeadLetter(3));
        attempts.forget(&key);
        assert_eq!(attempts.fail(&key), Verdict::Retry(1), "forgotten after it was handled");
        // At least one attempt: 0 behaves as 1.
        assert_eq!(Attempts::new(0).fail(&key), Verdict::DeadLetter(1));
    }

    #[test]
    fn the_dead_letter_keeps_the_record_and_says_where_it_came_from() {
        let dead = dead_letter_record(&record(), 3, "bad json");
        assert_eq!(dead.topic, "orders.dlq");
        assert_eq!(dead.partition, None, "partitioned by its key like any record");
        assert_eq!(dead.key, record().key);
        assert_eq!(dead.value, record().value);
        assert_eq!(dead.timestamp, Some(1_700_000_000_000));
        let headers: Vec<(String, String)> = dead
            .headers
            .iter()
            .map(|h| {
                (
                    h.key.clone(),
                    String::from_utf8_lossy(h.value.as_deref().unwrap()).into_owned(),
                )
            })
            .collect();
        let expected = [
            ("trace", "t-1"),
            ("dlq.source.topic", "orders"),
            ("dlq.source.partition", "2"),
            ("dlq.source.offset", "41"),
            ("dlq.attempts", "3"),
            ("dlq.error", "bad json"),
        ];
        assert_eq!(headers, expected.map(|(k, v)| (k.to_string(), v.to_string())).to_vec());
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let error = "é".repeat(MAX_ERROR_BYTES);
        let dead = dead_letter_record(&record(), 1, &error);
        let value = dead.headers.last().unwrap().value.clone().unwrap();
        assert!(value.len() <= MAX_ERROR_BYTES);
        assert!(std::str::from_utf8(&value).is_ok());
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn only_retry_keeps_the_record_uncommitted() {
        assert!(Outcome::Processed.is_done());
        assert!(!Outcome::Retry { attempts: 1 }.is_done());
        assert!(Outcome::DeadLettered {
            topic: "orders.dlq".into(),
            offset: Some(1)
        }
        .is_done());
    }
}
