//! Live progress of the `broker perf` commands. This module owns the one line each phase of a
//! run (starting brokers, waiting for leaders, filling, measuring, ...) draws on standard error
//! — its name, a bar, the elapsed time against the total (or the steps done), and a live
//! message — and two rules every benchmark relies on:
//! - nothing is drawn unless standard error is a terminal (indicatif's stderr target checks),
//!   so scripts, logs and tests get only the summary on standard output;
//! - a phase's line is cleared when it ends (also when it is dropped on an error), so the
//!   summary printed after it reads exactly as without a terminal.

use broker::perf::storage;
use indicatif::{FormattedDuration, ProgressBar, ProgressFinish, ProgressState, ProgressStyle};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Width of the bar in characters: the longest phase's line still fits 80 columns.
const BAR_WIDTH: usize = 20;

/// Messages change at most this often: the figures stay readable, and a hot loop that reports
/// on every record pays one clock read, not a format.
const MESSAGE_INTERVAL: Duration = Duration::from_millis(100);

/// One phase of a benchmark on one line of standard error (the message is cut to the
/// terminal's width, so the line never wraps); cleared by [`Phase::finish`].
pub struct Phase {
    bar: ProgressBar,
    /// Asked once: the draw target's answer does not change during a run, and asking takes the
    /// bar's lock.
    hidden: bool,
    started: Instant,
    /// When the next message is due, in milliseconds since `started`.
    next_message_ms: AtomicU64,
}

impl Phase {
    /// A phase that lasts about `length`: the bar fills with time, next to `elapsed/total`.
    pub fn timed(name: &str, length: Duration) -> Phase {
        let template = format!(
            "{{prefix}} [{{timebar}}] {{elapsed_precise}}/{} {{wide_msg}}",
            FormattedDuration(length)
        );
        let style = ProgressStyle::with_template(&template)
            .expect("a valid progress template")
            // Drawn from the elapsed time on every tick, so a phase that only waits (the idle
            // benchmark's measurement) still moves without anyone setting a position.
            .with_key("timebar", move |state: &ProgressState, out: &mut dyn Write| {
                let fraction = (state.elapsed().as_secs_f64() / length.as_secs_f64()).min(1.0);
                let filled = (fraction * BAR_WIDTH as f64) as usize;
                let head = usize::from(filled < BAR_WIDTH);
                let _ = write!(
                    out,
                    "{}{}{}",
                    "=".repeat(filled),
                    ">".repeat(head),
                    " ".repeat(BAR_WIDTH - filled - head)
                );
            });
        Phase::new(ProgressBar::no_length(), style, name)
    }

    /// A phase that ends after `total` steps (partitions led, records written, runs): the bar
    /// fills with [`Phase::set_position`], next to `position/total` and the elapsed time.
    pub fn counted(name: &str, total: u64) -> Phase {
        let style = ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:{BAR_WIDTH}}}] {{pos}}/{{len}} {{elapsed_precise}} {{wide_msg}}"
        ))
        .expect("a valid progress template")
        .progress_chars("=> ");
        Phase::new(ProgressBar::new(total), style, name)
    }

    /// A phase of unknown length (starting, waiting for something): a spinner and the elapsed
    /// time.
    pub fn open(name: &str) -> Phase {
        let style = ProgressStyle::with_template("{prefix} {spinner} {elapsed_precise} {wide_msg}")
            .expect("a valid progress template");
        Phase::new(ProgressBar::no_length(), style, name)
    }

    fn new(bar: ProgressBar, style: ProgressStyle, name: &str) -> Phase {
        let bar = bar
            .with_style(style)
            .with_prefix(name.to_string())
            .with_finish(ProgressFinish::AndClear);
        let hidden = bar.is_hidden();
        if !hidden {
            // Elapsed time and spinner move while the phase waits; no ticker thread disturbs a
            // run whose progress nobody sees.
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Phase {
            bar,
            hidden,
            started: Instant::now(),
            next_message_ms: AtomicU64::new(0),
        }
    }

    /// Sets the live message (the first call always shows; later ones at most every 100 ms).
    /// `message` is not called when nothing is drawn.
    pub fn message(&self, message: impl FnOnce() -> String) {
        if self.hidden {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        if now < self.next_message_ms.load(Ordering::Relaxed) {
            return;
        }
        self.next_message_ms
            .store(now + MESSAGE_INTERVAL.as_millis() as u64, Ordering::Relaxed);
        self.bar.set_message(message());
    }

    /// Steps done of a [`Phase::counted`] phase.
    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// Ends the phase and clears its line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The live message of a phase that moves records: rates over `elapsed` so far.
pub fn throughput(records: u64, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    format!(
        "{:.0} records/s, {:.1} MB/s so far",
        records as f64 / seconds,
        bytes as f64 / seconds / 1e6
    )
}

/// `broker perf storage` (a library run) reports its measurements here; each becomes a phase.
#[derive(Default)]
pub struct StoragePhases {
    current: Option<Phase>,
}

impl storage::Progress for StoragePhases {
    fn start(&mut self, measurement: &str, length: Option<Duration>) {
        self.current = Some(match length {
            Some(length) => Phase::timed(measurement, length),
            None => Phase::open(measurement),
        });
    }

    fn update(&mut self, elapsed: Duration, bytes: u64) {
        if let Some(phase) = &self.current {
            phase.message(|| {
                format!(
                    "{:.0} MB/s so far",
                    bytes as f64 / elapsed.as_secs_f64().max(0.001) / 1e6
                )
            });
        }
    }

    fn finish(&mut self) {
        if let Some(phase) = self.current.take() {
            phase.finish();
        }
    }
}
