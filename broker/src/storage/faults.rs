//! Fault points of the storage layer, live only with the `failpoints` feature (the `fail`
//! crate; without it they compile to nothing). Tests turn them on in a running broker through
//! its admin endpoint (`PUT /failpoints/{name}` with an action such as `return(enospc)`).
//!
//! - `segment-write`: a segment write fails (`return(enospc)`, `return(eio)`, …) before any
//!   byte is written.
//! - `segment-fsync`: an fdatasync of a segment fails.
//! - `disk-available`: the data directory's free space reads as the given number of bytes.
//! - `file-open`: reopening a log file the open-file budget had closed fails
//!   (`return(emfile)`: the process is out of descriptors).
//! - `replica-open-delay`: each replica waits the given milliseconds before it opens its log
//!   (`return(2500)`): a broker with many replicas to open, in a small test. Set from the
//!   start through the `FAILPOINTS` environment variable (`replica-open-delay=return(2500)`).

use std::io;
use std::time::Duration;

/// The error a fault point's argument names: `enospc`, `emfile`, `eio` (the default).
pub fn injected_error(argument: Option<String>) -> io::Error {
    let errno = match argument.as_deref() {
        Some("enospc") => rustix::io::Errno::NOSPC,
        Some("emfile") => rustix::io::Errno::MFILE,
        _ => rustix::io::Errno::IO,
    };
    io::Error::from_raw_os_error(errno.raw_os_error())
}

/// An injected write error, if `segment-write` is on.
pub fn segment_write() -> Option<io::Error> {
    fail::fail_point!("segment-write", |argument| Some(injected_error(argument)));
    None
}

/// An injected error for reopening a budgeted file, if `file-open` is on.
pub fn file_open() -> Option<io::Error> {
    fail::fail_point!("file-open", |argument| Some(injected_error(argument)));
    None
}

/// An injected fsync error, if `segment-fsync` is on.
pub fn segment_fsync() -> Option<io::Error> {
    fail::fail_point!("segment-fsync", |argument| Some(injected_error(argument)));
    None
}

/// An injected free-space reading, if `disk-available` is on with a number.
pub fn disk_available() -> Option<u64> {
    fail::fail_point!("disk-available", |argument: Option<String>| argument
        .and_then(|bytes| bytes.parse().ok()));
    None
}

/// A delay before a replica opens its log, if `replica-open-delay` is on with milliseconds.
pub fn replica_open_delay() -> Option<Duration> {
    fail::fail_point!("replica-open-delay", |argument: Option<String>| argument
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis));
    None
}
