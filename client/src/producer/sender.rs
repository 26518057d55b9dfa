//! The partition task: the one owner of everything about one partition of one producer — the
//! open batch ([`Accumulator`]), the stamps ([`Sequencer`]), the sealed batches not yet
//! acknowledged in sequence order, and up to `max_in_flight` produce requests. Keeping all of
//! it in one task is what makes the ordering rules simple; the rules themselves are the pure
//! cores ([`DeliveryRules`], the sequencer, the accumulator). This file is the async shell:
//! it reads the clock, takes commands, sends requests, fetches producer ids and answers each
//! record's future.

use super::accumulator::{max_batch_bytes, Accumulator, Sealed};
use super::delivery::{Delivery, DeliveryRules, ErrorVerdict};
use super::error::ProduceError;
use super::record::RecordMetadata;
use super::routing::TopicLayout;
use super::sequencer::Sequencer;
use super::Shared;
use crate::cluster::ProduceAck;
use crate::error::ClientError;
use crate::retry::Backoff;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use proto::record_batch::{encode_batch_compressed, restamp, Record};
use proto::v1::ErrorCode;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Commands a partition task takes per turn of its loop before looking at anything else.
const COMMANDS_PER_TURN: usize = 4096;

/// What `send`, `flush` and `close` ask of a partition task.
pub(super) enum Command {
    /// Batch and send this record.
    Record(QueuedRecord),
    /// Seal the open batch and answer once everything sealed so far has its outcome.
    Flush(oneshot::Sender<()>),
}

/// A record on its way to a batch, with the `buffer_memory` it holds and its future's sender.
pub(super) struct QueuedRecord {
    pub(super) record: Record,
    pub(super) size: usize,
    pub(super) enqueued: Instant,
    pub(super) done: oneshot::Sender<Result<RecordMetadata, ProduceError>>,
}

/// A sealed batch, waiting for its acknowledgement.
struct Batch {
    delivery: Delivery,
    bytes: Bytes,
    /// Bytes of `buffer_memory` its records hold.
    reserved: usize,
    records: Vec<(i64, oneshot::Sender<Result<RecordMetadata, ProduceError>>)>,
}

type Attempt = Pin<Box<dyn Future<Output = (u64, Result<ProduceAck, ClientError>)> + Send>>;

/// One partition's task; see the module doc.
pub(super) struct PartitionTask {
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: u32,
    rules: DeliveryRules,
    accumulator: Accumulator<QueuedRecord>,
    sequencer: Sequencer,
    unacked: VecDeque<Batch>,
    next_batch_id: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Something happened that may let a batch be sent, expire or answer a flush.
    changed: bool,
}

impl PartitionTask {
    pub(super) fn new(shared: Arc<Shared>, topic: Arc<str>, partition: u32, layout: TopicLayout) -> Self {
        let config = &shared.config;
        let rules = DeliveryRules {
            idempotent: config.enable_idempotence,
            max_in_flight: config.max_in_flight,
            delivery_timeout: config.delivery_timeout,
            request_timeout: config.request_timeout,
            backoff: Backoff::jittered(config.retry_backoff, config.retry_backoff_max),
        };
        let accumulator = Accumulator::new(
            max_batch_bytes(config.batch_size, layout.max_message_bytes),
            config.linger,
        );
        let sequencer = Sequencer::new(config.enable_idempotence);
        PartitionTask {
            shared,
            topic,
            partition,
            rules,
            accumulator,
            sequencer,
            unacked: VecDeque::new(),
            next_batch_id: 0,
            flush_waiters: Vec::new(),
            changed: true,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut attempts: FuturesUnordered<Attempt> = FuturesUnordered::new();
        let mut commands_open = true;
        // One timer, re-armed only when the next deadline moves: records arrive far more often
        // than deadlines change.
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            if self.changed || (self.sequencer.restamp_from().is_some() && attempts.is_empty()) {
                self.changed = false;
                let now = Instant::now();
                self.expire_queued(now);
                if self.sequencer.restamp_from().is_some() && attempts.is_empty() {
                    self.take_new_identity().await;
                }
                if self.sequencer.restamp_from().is_none() {
                    self.dispatch(&mut attempts, now);
                }
                self.answer_flushes();
            }
            if !commands_open && self.accumulator.is_empty() && self.unacked.is_empty() {
                return;
            }
            // A batch waiting out a backoff needs a timer; one that is due but not sent waits
            // for an answer to free a slot (or for a producer id), which wakes the loop anyway.
            let now = Instant::now();
            let resend_at = self
                .unacked
                .iter()
                .map(|b| &b.delivery)
                .find(|d| !d.in_flight)
                .filter(|d| d.not_before > now)
                .map(|d| d.not_before);
            let wake = match (self.accumulator.linger_deadline(), resend_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(tokio::time::Instant::from_std);
            if wake != armed {
                if let Some(at) = wake {
                    timer.as_mut().reset(at);
                }
                armed = wake;
            }
            tokio::select! {
                command = commands.recv(), if commands_open => {
                    commands_open = self.on_command(command);
                    // Take whatever else is queued in the same turn: one pass of the loop (clock
                    // reads, dispatch) per burst of records rather than per record.
                    for _ in 0..COMMANDS_PER_TURN {
                        match commands.try_recv() {
                            Ok(command) => commands_open = self.on_command(Some(command)),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                commands_open = self.on_command(None);
                                break;
                            }
                        }
                    }
                }
                Some((id, outcome)) = attempts.next(), if !attempts.is_empty() => {
                    self.on_outcome(id, outcome);
                    self.changed = true;
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.changed = true;
                    let now = tokio::time::Instant::now().into_std();
                    if let Some(sealed) = self.accumulator.seal_if_due(now) {
                        self.seal(sealed);
                    }
                }
            }
        }
    }

    /// Handles one command; returns whether more may come.
    fn on_command(&mut self, command: Option<Command>) -> bool {
        match command {
            Some(Command::Record(record)) => {
                let (size, enqueued) = (record.size, record.enqueued);
                for sealed in self.accumulator.append(record, size, enqueued).into_iter().flatten() {
                    self.seal(sealed);
                }
                true
            }
            Some(Command::Flush(done)) => {
                if let Some(sealed) = self.accumulator.seal() {
                    self.seal(sealed);
                }
                let last = self.next_batch_id;
                self.flush_waiters.push((last, done));
                self.changed = true;
                true
            }
            None => {
                if let Some(sealed) = self.accumulator.seal() {
                    self.seal(sealed);
                }
                self.changed = true;
                false
            }
        }
    }

    /// Encodes and stamps sealed records and queues the batch for sending.
    fn seal(&mut self, sealed: Sealed<QueuedRecord>) {
        self.changed = true;
        let mut records = Vec::with_capacity(sealed.records.len());
        let mut waiters = Vec::with_capacity(sealed.records.len());
        for (delta, queued) in sealed.records.into_iter().enumerate() {
            let mut record = queued.record;
            record.offset_delta = delta as i32;
            waiters.push((record.timestamp, queued.done));
            records.push(record);
        }
        let stamp = self.sequencer.stamp(records.len());
        let bytes = encode_batch_compressed(&records, stamp, self.shared.config.compression);
        self.next_batch_id += 1;
        self.unacked.push_back(Batch {
            delivery: Delivery::new(self.next_batch_id, sealed.created, Instant::now()),
            bytes,
            reserved: sealed.bytes,
            records: waiters,
        });
    }

    /// Fails batches that waited past the delivery timeout without being sent again.
    fn expire_queued(&mut self, now: Instant) {
        while let Some(index) = self.rules.first_expired(self.unacked.iter().map(|b| &b.delivery), now) {
            let batch = self.unacked.remove(index).expect("index in range");
            if !batch.delivery.maybe_written {
                // Never reached a broker: the batches after it must not wait for it.
                self.sequencer.refused(batch.delivery.id);
            }
            let last_error = batch
                .delivery
                .last_error
                .as_ref()
                .map_or("none (not sent yet)".to_string(), |e| e.to_string());
            let elapsed = batch.delivery.created.elapsed();
            self.fail_batch(batch, ProduceError::DeliveryTimeout { elapsed, last_error });
        }
    }

    /// Sends queued batches in order, up to `max_in_flight`.
    fn dispatch(&mut self, attempts: &mut FuturesUnordered<Attempt>, now: Instant) {
        if !self
            .sequencer
            .ready_to_send(self.unacked.front().map(|b| b.delivery.id))
        {
            return;
        }
        let deliveries = self.unacked.iter().map(|b| &b.delivery);
        let sendable = self
            .rules
            .sendable(deliveries, attempts.len(), self.sequencer.order_barrier(), now);
        for index in sendable {
            let batch = &mut self.unacked[index];
            batch.delivery.start_attempt();
            let timeout = self.rules.attempt_timeout(&batch.delivery, Instant::now());
            let cluster = Arc::clone(&self.shared.cluster);
            let topic = Arc::clone(&self.topic);
            let partition = self.partition;
            let acks = self.shared.config.acks;
            let bytes = batch.bytes.clone();
            let id = batch.delivery.id;
            attempts.push(Box::pin(async move {
                let outcome = cluster.produce_attempt(&topic, partition, acks, bytes, timeout).await;
                (id, outcome)
            }));
        }
    }

    fn on_outcome(&mut self, id: u64, outcome: Result<ProduceAck, ClientError>) {
        let Some(index) = self.unacked.iter().position(|b| b.delivery.id == id) else {
            return;
        };
        let error = match outcome {
            Ok(ack) => {
                let batch = self.unacked.remove(index).expect("index in range");
                self.complete(batch, ack.base_offset);
                return;
            }
            Err(error) => error,
        };
        let now = Instant::now();
        let verdict = self.rules.on_error(
            &self.unacked[index].delivery,
            error.code(),
            error.is_retriable(),
            index > 0,
            now,
        );
        match verdict {
            ErrorVerdict::AlreadyWritten => {
                let batch = self.unacked.remove(index).expect("index in range");
                self.complete(batch, None);
            }
            ErrorVerdict::Retry { not_before } => {
                let delivery = &mut self.unacked[index].delivery;
                delivery.in_flight = false;
                delivery.not_before = not_before;
                delivery.last_error = Some(error);
            }
            ErrorVerdict::Restamp => {
                let delivery = &mut self.unacked[index].delivery;
                delivery.in_flight = false;
                delivery.not_before = now;
                delivery.last_error = Some(error);
                self.sequencer.refused(id);
            }
            ErrorVerdict::Fail {
                timed_out,
                restamp_later,
            } => {
                let batch = self.unacked.remove(index).expect("index in range");
                if restamp_later {
                    self.sequencer.refused(id);
                }
                let failure = if timed_out {
                    ProduceError::DeliveryTimeout {
                        elapsed: batch.delivery.created.elapsed(),
                        last_error: error.to_string(),
                    }
                } else {
                    match error {
                        ClientError::Broker { code, message } => ProduceError::Broker { code, message },
                        other => ProduceError::Broker {
                            code: ErrorCode::InvalidRequest,
                            message: other.to_string(),
                        },
                    }
                };
                self.fail_batch(batch, failure);
            }
        }
    }

    fn fail_batch(&self, batch: Batch, error: ProduceError) {
        self.shared.buffer.add_permits(batch.reserved);
        for (_, done) in batch.records {
            let _ = done.send(Err(error.clone()));
        }
    }

    fn complete(&self, batch: Batch, base_offset: Option<u64>) {
        self.shared.buffer.add_permits(batch.reserved);
        for (delta, (timestamp, done)) in batch.records.into_iter().enumerate() {
            let _ = done.send(Ok(RecordMetadata {
                topic: Arc::clone(&self.topic),
                partition: self.partition,
                offset: base_offset.map(|base| base + delta as u64),
                timestamp,
            }));
        }
    }

    /// Takes the producer's id (first time) or a fresh one (after a refusal) and re-stamps the
    /// batches the sequencer says are not in the log. Only called with nothing in flight.
    async fn take_new_identity(&mut self) {
        let identity = match self.sequencer.identity() {
            None => self
                .shared
                .identity
                .get_or_try_init(|| self.shared.cluster.init_producer_id())
                .await
                .copied(),
            Some(_) => self.shared.cluster.init_producer_id().await,
        };
        match identity {
            Ok(identity) => {
                let batches = self.unacked.iter().map(|b| (b.delivery.id, b.records.len()));
                let stamps = self.sequencer.adopt_identity(identity, batches);
                // Both in id order: one pass pairs each stamp with its batch.
                let mut stamps = stamps.into_iter().peekable();
                for batch in self.unacked.iter_mut() {
                    if let Some((_, stamp)) = stamps.next_if(|&(id, _)| id == batch.delivery.id) {
                        batch.bytes = restamp(&batch.bytes, stamp);
                        batch.delivery.maybe_written = false;
                    }
                }
            }
            Err(error) if refuses_for_good(&error) => {
                // Refused, not unavailable (no ACL lets this producer write, its credentials
                // were refused): every batch waiting for an id fails now with the reason,
                // instead of at its delivery timeout.
                tracing::warn!(%error, topic = %self.topic, partition = self.partition, "producer id refused");
                let code = error.code().unwrap_or(ErrorCode::SaslAuthenticationFailed);
                for batch in std::mem::take(&mut self.unacked) {
                    let failure = ProduceError::Broker {
                        code,
                        message: error.to_string(),
                    };
                    self.fail_batch(batch, failure);
                }
            }
            Err(error) => {
                tracing::warn!(%error, topic = %self.topic, partition = self.partition, "no producer id yet");
                // Retried on the next turn of the loop; queued batches expire meanwhile.
                for batch in self.unacked.iter_mut() {
                    batch.delivery.not_before = Instant::now() + self.shared.config.retry_backoff_max;
                    batch.delivery.last_error = Some(ClientError::Unreachable {
                        address: "controller".into(),
                        message: error.to_string(),
                    });
                }
                tokio::time::sleep(self.shared.config.retry_backoff_max.min(Duration::from_millis(200))).await;
            }
        }
    }

    fn answer_flushes(&mut self) {
        // Batches are kept in id order: a flush is answered once no batch up to its id is left.
        let oldest_unacked = self.unacked.front().map(|b| b.delivery.id);
        for (last, done) in std::mem::take(&mut self.flush_waiters) {
            if oldest_unacked.is_none_or(|oldest| oldest > last) {
                let _ = done.send(());
            } else {
                self.flush_waiters.push((last, done));
            }
        }
    }
}

/// Whether an InitProducerId failure is a refusal that asking again cannot change (a broker
/// code that is not retriable, refused credentials), not the controller being unavailable.
fn refuses_for_good(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code, .. } => !code.is_retriable(),
        ClientError::Authentication { .. } | ClientError::Config(_) => true,
        ClientError::RetriesExhausted { .. } | ClientError::Unreachable { .. } => false,
    }
}
