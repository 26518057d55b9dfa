//! `broker group ...`: consumer groups (`list`, `describe`, `reset-offsets`, `delete`), and
//! `broker consume --group`: consuming as a member of a group, committing what was printed.

use super::admin::{connect, print_record};
use super::output::{print_json, OutputFormat};
use anyhow::bail;
use client::{Admin, AdminError, ErrorCode, GroupConfig, GroupConsumer, GroupDescription, OffsetReset, OffsetResetTo};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// `broker group ...`
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups with their state and member count (every broker is asked for the
    /// groups it coordinates).
    List,
    /// Show a group's members and, per partition, the committed offset, high watermark and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move an empty group's committed offsets of every partition of a topic (stop the
    /// group's consumers first).
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
    ResetOffsets {
        /// Group id.
        group: String,
        /// The topic whose offsets to move.
        #[arg(long)]
        topic: String,
        /// To the log start of each partition.
        #[arg(long)]
        to_earliest: bool,
        /// To the end of each partition (skip everything).
        #[arg(long)]
        to_latest: bool,
        /// To this offset in every partition (clamped to each partition's log).
        #[arg(long)]
        to_offset: Option<u64>,
        /// To the first record at or after this time: RFC 3339 (2024-05-01T12:00:00Z) or
        /// milliseconds since the Unix epoch.
        #[arg(long, value_parser = parse_datetime)]
        to_datetime: Option<i64>,
    },
    /// Delete an empty group and its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

/// Runs a `broker group` command.
pub async fn run(bootstrap: &str, command: GroupCommand, output: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::new(connect(bootstrap));
    match command {
        GroupCommand::List => list(&admin, output).await,
        GroupCommand::Describe { group } => {
            let description = admin.describe_group(&group).await.map_err(explain)?;
            let view = GroupView::from(description);
            match output {
                OutputFormat::Json => print_json(&view),
                OutputFormat::Text => {
                    print_description(&view);
                    Ok(())
                }
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime) {
                (true, ..) => OffsetResetTo::Earliest,
                (_, true, ..) => OffsetResetTo::Latest,
                (_, _, Some(offset), _) => OffsetResetTo::Offset(offset),
                (_, _, _, Some(ms)) => OffsetResetTo::Datetime(ms),
                _ => bail!("one of --to-earliest, --to-latest, --to-offset, --to-datetime is required"),
            };
            let offsets = admin.reset_offsets(&group, &topic, to).await;
            let outcome = GroupOutcome::new(&group, offsets.as_ref().err());
            let reset = ResetView {
                group: group.clone(),
                topic: topic.clone(),
                offsets: offsets
                    .as_ref()
                    .map(|offsets| {
                        offsets
                            .iter()
                            .map(|(partition, offset)| PartitionOffsetView {
                                partition: *partition,
                                offset: *offset,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                ok: outcome.ok,
                error: outcome.error.clone(),
            };
            match output {
                OutputFormat::Json => print_json(&reset)?,
                OutputFormat::Text if reset.ok => {
                    for p in &reset.offsets {
                        println!("{group} {topic}/{}: committed offset {}", p.partition, p.offset);
                    }
                }
                OutputFormat::Text => {}
            }
            offsets.map(|_| ()).map_err(explain)
        }
        GroupCommand::Delete { group } => {
            let deleted = admin.delete_group(&group).await;
            let outcome = GroupOutcome::new(&group, deleted.as_ref().err());
            match output {
                OutputFormat::Json => print_json(&outcome)?,
                OutputFormat::Text if outcome.ok => println!("deleted group {group}"),
                OutputFormat::Text => {}
            }
            deleted.map_err(explain)
        }
    }
}

async fn list(admin: &Admin, output: OutputFormat) -> anyhow::Result<()> {
    let list = admin.list_groups().await?;
    for (broker, error) in &list.unreachable {
        eprintln!("warning: broker {broker} did not answer, its groups are missing: {error}");
    }
    let view = GroupListView {
        groups: list
            .groups
            .into_iter()
            .map(|g| GroupSummaryView {
                group: g.group_id,
                state: g.state,
                members: g.members,
                coordinator: g.coordinator,
            })
            .collect(),
        unreachable_brokers: list.unreachable.into_iter().map(|(broker, _)| broker).collect(),
    };
    match output {
        OutputFormat::Json => print_json(&view),
        OutputFormat::Text => {
            println!("{:<32} {:<12} {:>7} {:>11}", "group", "state", "members", "coordinator");
            for g in &view.groups {
                println!("{:<32} {:<12} {:>7} {:>11}", g.group, g.state, g.members, g.coordinator);
            }
            Ok(())
        }
    }
}

/// A group refusal in words an operator can act on.
fn explain(error: AdminError) -> anyhow::Error {
    match &error {
        AdminError::Group {
            group,
            code: ErrorCode::NonEmptyGroup,
            message,
        } => anyhow::anyhow!(
            "group {group:?} is not empty (NON_EMPTY_GROUP: {message}): stop its consumers and wait for their sessions to end first"
        ),
        AdminError::Group {
            group,
            code: ErrorCode::GroupIdNotFound,
            ..
        } => anyhow::anyhow!("no group {group:?} (GROUP_ID_NOT_FOUND)"),
        _ => error.into(),
    }
}

fn print_description(view: &GroupView) {
    println!(
        "group {}  state={}  group_epoch={}  assignment_epoch={}  assignor={}  coordinator={}",
        view.group, view.state, view.group_epoch, view.assignment_epoch, view.assignor, view.coordinator
    );
    let list = |tps: &[String]| if tps.is_empty() { "-".to_string() } else { tps.join(",") };
    println!("members:");
    println!(
        "  {:<36}  {:<12}  {:>5}  {:<24}  {:<18}  subscription",
        "member", "instance", "epoch", "assigned", "pending_revocation"
    );
    for m in &view.members {
        println!(
            "  {:<36}  {:<12}  {:>5}  {:<24}  {:<18}  {}",
            m.member_id,
            m.group_instance_id.as_deref().unwrap_or("-"),
            m.member_epoch,
            list(&m.assigned),
            list(&m.pending_revocation),
            m.subscribed_topics.join(",")
        );
    }
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!("partitions:");
    println!(
        "  {:<24}  {:>9}  {:>10}  {:>14}  {:>8}  member",
        "topic", "partition", "committed", "high_watermark", "lag"
    );
    for p in &view.partitions {
        println!(
            "  {:<24}  {:>9}  {:>10}  {:>14}  {:>8}  {}",
            p.topic,
            p.partition,
            or_dash(p.committed),
            or_dash(p.high_watermark),
            or_dash(p.lag),
            p.member_id.as_deref().unwrap_or("-")
        );
    }
}

/// `group list --output json`.
#[derive(Serialize)]
struct GroupListView {
    groups: Vec<GroupSummaryView>,
    /// Brokers that did not answer (their groups are missing).
    unreachable_brokers: Vec<u64>,
}

#[derive(Serialize)]
struct GroupSummaryView {
    group: String,
    state: String,
    members: u32,
    coordinator: u64,
}

/// `group describe --output json`.
#[derive(Serialize)]
struct GroupView {
    group: String,
    state: String,
    group_epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    coordinator: u64,
    members: Vec<MemberView>,
    partitions: Vec<PartitionLagView>,
}

#[derive(Serialize)]
struct MemberView {
    member_id: String,
    group_instance_id: Option<String>,
    member_epoch: i32,
    subscribed_topics: Vec<String>,
    /// `topic/partition` each.
    assigned: Vec<String>,
    pending_revocation: Vec<String>,
    left_for_restart: bool,
}

#[derive(Serialize)]
struct PartitionLagView {
    topic: String,
    partition: u32,
    committed: Option<u64>,
    high_watermark: Option<u64>,
    lag: Option<u64>,
    member_id: Option<String>,
}

impl From<GroupDescription> for GroupView {
    fn from(d: GroupDescription) -> Self {
        let names = |tps: Vec<(String, u32)>| tps.into_iter().map(|(t, p)| format!("{t}/{p}")).collect();
        GroupView {
            group: d.group_id,
            state: d.state,
            group_epoch: d.group_epoch,
            assignment_epoch: d.assignment_epoch,
            assignor: d.assignor,
            coordinator: d.coordinator,
            members: d
                .members
                .into_iter()
                .map(|m| MemberView {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    member_epoch: m.member_epoch,
                    subscribed_topics: m.subscribed_topics,
                    assigned: names(m.assigned),
                    pending_revocation: names(m.pending_revocation),
                    left_for_restart: m.left_for_restart,
                })
                .collect(),
            partitions: d
                .partitions
                .into_iter()
                .map(|p| PartitionLagView {
                    topic: p.topic,
                    partition: p.partition,
                    committed: p.committed,
                    high_watermark: p.high_watermark,
                    lag: p.lag,
                    member_id: p.member_id,
                })
                .collect(),
        }
    }
}

/// `group delete --output json`.
#[derive(Serialize)]
struct GroupOutcome {
    group: String,
    ok: bool,
    error: Option<String>,
}

impl GroupOutcome {
    fn new(group: &str, error: Option<&AdminError>) -> GroupOutcome {
        GroupOutcome {
            group: group.to_string(),
            ok: error.is_none(),
            error: error.map(ToString::to_string),
        }
    }
}

/// `group reset-offsets --output json`.
#[derive(Serialize)]
struct ResetView {
    group: String,
    topic: String,
    offsets: Vec<PartitionOffsetView>,
    ok: bool,
    error: Option<String>,
}

#[derive(Serialize)]
struct PartitionOffsetView {
    partition: u32,
    offset: u64,
}

/// `broker consume TOPIC --group G`: consumes as a member of `group` (partitions as its
/// coordinator assigns them; without a committed offset a partition starts at the end, or at
/// the log start with `from_beginning`), prints records like `consume`, and commits what it
/// printed after each batch. Stops after `max` records (committing exactly those) or on
/// Ctrl-C, leaving the group either way.
/// How `consume --group` joins its group (Kafka's consumer settings of the same names).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MemberArgs {
    /// Static membership: a member restarted with the same id within its session gets its
    /// partitions back without a rebalance.
    #[arg(long, requires = "group")]
    pub group_instance_id: Option<String>,
    /// How long the coordinator waits for a heartbeat before it gives the member's partitions
    /// to others (default 45000).
    #[arg(long, requires = "group")]
    pub session_timeout_ms: Option<u64>,
    /// How often the member heartbeats (default 3000).
    #[arg(long, requires = "group")]
    pub heartbeat_interval_ms: Option<u64>,
}

/// Consumes `topic` as a member of `group`, printing records and committing what was printed.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    member: &MemberArgs,
    from_beginning: bool,
    max: Option<usize>,
    print_offsets: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let config = GroupConfig {
        auto_offset_reset: if from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        // Commits are explicit, of what was printed: `--max` may stop inside a batch.
        enable_auto_commit: false,
        ..GroupConfig::new(group)
    };
    let config = GroupConfig {
        group_instance_id: member.group_instance_id.clone(),
        session_timeout: member
            .session_timeout_ms
            .map_or(config.session_timeout, Duration::from_millis),
        heartbeat_interval: member
            .heartbeat_interval_ms
            .map_or(config.heartbeat_interval, Duration::from_millis),
        ..config
    };
    let mut consumer = GroupConsumer::new(connect(bootstrap), config)?;
    consumer.subscribe(vec![topic.to_string()]).await?;
    let outcome = consume_until_done(&mut consumer, max, print_offsets, output).await;
    let closed = consumer.close().await;
    outcome?;
    closed?;
    Ok(())
}

async fn consume_until_done(
    consumer: &mut GroupConsumer,
    max: Option<usize>,
    print_offsets: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let records = tokio::select! {
            records = consumer.poll(Duration::from_secs(1)) => records?,
            _ = &mut interrupted => return Ok(()),
        };
        let mut done = HashMap::new();
        for record in &records {
            print_record(&mut stdout.lock(), record, print_offsets, output)?;
            done.insert((record.topic.clone(), record.partition), record.offset + 1);
            printed += 1;
            if max.is_some_and(|max| printed >= max) {
                consumer.commit_offsets(done).await?;
                return Ok(());
            }
        }
        if !records.is_empty() {
            // A refused commit (the member lost its partitions: fenced, or its session ended
            // while it was stopped) loses nothing: the partitions' next owner starts from the
            // last commit that went through, so the records are printed again there (at least
            // once). The member rejoins on its next poll.
            if let Err(error) = consumer.commit().await {
                eprintln!("commit refused, continuing: {error}");
            }
        }
    }
}

/// `--to-datetime`: milliseconds since the Unix epoch, or RFC 3339
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, a space allowed instead of the `T`).
pub fn parse_datetime(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?}: expected RFC 3339 (2024-05-01T12:00:00Z) or milliseconds since the epoch");
    let number = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (date, rest) = text.split_at_checked(10).ok_or_else(bad)?;
    let mut rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    let parts: Vec<&str> = date.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(bad());
    };
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    let (time, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(at) => rest.split_at(at),
        None => return Err(bad()),
    };
    rest = zone;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let clock: Vec<&str> = clock.split(':').collect();
    let [hour, minute, second] = clock.as_slice() else {
        return Err(bad());
    };
    let (hour, minute, second) = (number(hour)?, number(minute)?, number(second)?);
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits = &fraction[..fraction.len().min(3)];
        number(digits)? * 10_i64.pow(3 - digits.len() as u32)
    };
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        zone => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
            sign * (number(h)? * 60 + number(m)?)
        }
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_rfc3339_or_milliseconds() {
        assert_eq!(parse_datetime("1714564800000"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("2024-05-01 12:00:00z"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("2024-05-01T14:00:00+02:00"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("2024-05-01T07:30:00-04:30"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("2024-05-01T12:00:00.25Z"), Ok(1_714_564_800_250));
        assert_eq!(parse_datetime("2024-05-01T12:00:00.123456Z"), Ok(1_714_564_800_123));
        // Leap day, and before the epoch.
        assert_eq!(parse_datetime("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_datetime("1969-12-31T23:59:59Z"), Ok(-1_000));
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad:?}");
        }
    }
}
