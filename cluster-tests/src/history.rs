//! The history of a test run: every operation the workload performed, as invoke / ok / fail /
//! info events with timestamps, in the order they happened. The recorder is shared by the
//! workload's tasks; a history is written and read as JSON lines so a failing run can be kept and
//! checked again.
//!
//! Consumer-group members add their own operations (`group_subscribe`, `assignment`,
//! `group_poll`, `commit`); histories written before them read back unchanged.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// How an operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The operation started.
    Invoke,
    /// It took effect (for a send: acknowledged).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect (e.g. a timeout).
    Info,
}

/// A record as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Value (unique per send in the workloads).
    pub value: String,
}

/// How a group member's partitions changed, as its rebalance listener was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentChange {
    /// `on_assigned`: the member consumes these from now on.
    Assigned,
    /// `on_revoked`: the member gave these up in an orderly way (also on `close`).
    Revoked,
    /// `on_lost`: the member dropped these without a hand-over (fenced, session expired).
    Lost,
}

/// What an operation was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Operation {
    /// A producer sent `value` to `partition`; `offset` is the acknowledged one (on `ok`).
    Send {
        /// Partition.
        partition: u32,
        /// The unique value.
        value: String,
        /// Offset acknowledged.
        offset: Option<u64>,
    },
    /// A consumer moved its position on `partition` to `offset`.
    Seek {
        /// Partition.
        partition: u32,
        /// New position.
        offset: u64,
    },
    /// A consumer's poll returned `records`, in the order returned.
    Poll {
        /// Records returned.
        records: Vec<Seen>,
    },
    /// After healing: every committed record of a partition, read from its leader.
    FinalRead {
        /// Partition.
        partition: u32,
        /// (offset, value) in offset order.
        records: Vec<(u64, String)>,
    },
    /// After healing and catch-up: a digest of one replica's committed log of a partition.
    ReplicaLog {
        /// Partition.
        partition: u32,
        /// The broker holding the replica.
        broker: u64,
        /// Digest of its committed entries.
        digest: String,
    },
    /// A group member joined `group` (`GroupConsumer::subscribe`): invoke, then ok or fail.
    GroupSubscribe {
        /// The group.
        group: String,
        /// The member id the consumer drew (a member that leaves and rejoins draws a new one).
        member: String,
    },
    /// A group member's rebalance listener ran (recorded from the callback, so in the order it
    /// happened relative to other members' events); always `ok`.
    Assignment {
        /// The group.
        group: String,
        /// Assigned, revoked or lost.
        change: AssignmentChange,
        /// The partitions (every one of the subscribed topic).
        partitions: Vec<u32>,
        /// The member epoch as of the member's last `poll` return (callbacks run inside `poll`,
        /// where the consumer cannot be asked): the epoch the change was made from or, for
        /// an assignment, possibly the one before.
        epoch: i32,
    },
    /// A group member's poll returned `records` (recorded when there were some); `ok`.
    GroupPoll {
        /// The group.
        group: String,
        /// `member_epoch()` when the poll returned.
        epoch: i32,
        /// Records returned.
        records: Vec<Seen>,
    },
    /// A group member committed `offsets` (partition, next offset to consume): invoke, then ok,
    /// fail (refused, with the broker's `code`) or info (no answer: it may have taken effect).
    Commit {
        /// The group.
        group: String,
        /// `member_epoch()` when the commit was sent.
        epoch: i32,
        /// (partition, offset) committed.
        offsets: Vec<(u32, u64)>,
        /// On `fail`: the error code the coordinator answered with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the run started.
    pub time_ms: u64,
    /// The producer or consumer (or checker step) that performed it.
    pub process: u32,
    /// Invoke, ok, fail or info.
    pub outcome: Outcome,
    /// What was done.
    #[serde(flatten)]
    pub operation: Operation,
}

/// Collects events from concurrent tasks.
pub struct Recorder {
    started: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Records an event now.
    pub fn record(&self, process: u32, outcome: Outcome, operation: Operation) {
        let event = Event {
            time_ms: self.started.elapsed().as_millis() as u64,
            process,
            outcome,
            operation,
        };
        self.events.lock().expect("history lock").push(event);
    }

    /// The events so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }
}

/// Writes `events` as JSON lines.
pub fn write_jsonl(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for event in events {
        serde_json::to_writer(&mut file, event)?;
        file.write_all(b"\n")?;
    }
    file.flush()
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<Event>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut events = Vec::new();
    for line in file.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    Ok(events)
}
