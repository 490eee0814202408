//! Progress on stderr: bars while a phase runs (hidden when stderr is not a
//! terminal), and one plain line per finished measurement either way.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-transfer bar.
pub fn bytes_bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:32} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

/// A counting bar (requests, blobs).
pub fn count_bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos}/{len} {per_sec}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

/// A spinner for steps of unknown length.
pub fn spinner(msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("template"));
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A finished measurement, printed above any bar.
pub fn note(line: impl AsRef<str>) {
    eprintln!("  {}", line.as_ref());
}

/// A phase heading.
pub fn phase(title: &str) {
    eprintln!("== {title}");
}
