//! Child processes under a deadline: a hung tool must fail its test, not
//! hang it.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Output},
    time::{Duration, Instant},
};

/// Fail with an actionable message when a tool is not installed, rather
/// than with a confusing spawn error deep inside a scenario.
pub fn require_tool(bin: &str, package: &str) {
    assert!(
        on_path(bin),
        "`{bin}` is not on PATH: these end-to-end tests need it (apt-get install {package})"
    );
}

/// Whether an executable named `bin` is in a directory on PATH.
pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Wait for `child` to exit, at most `limit`; past it, kill and reap it and
/// give `None` so the caller can fail with what the child wrote.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `ready` every `every` until it holds, at most `limit`. A child that
/// exits first, or is not ready in time, fails the test with `logs()`; it
/// is killed first so no daemon outlives its test.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    limit: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) at start:\n{}", logs());
        }
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} not ready in {limit:?}:\n{}", logs());
        }
        std::thread::sleep(every);
    }
}

/// Run the `openssl` CLI with `args`, requiring success.
pub fn openssl(args: &[&str]) {
    output_ok(Command::new("openssl").args(args));
}

/// [`openssl`] with `dir` as the working directory (relative file names).
pub fn openssl_in(dir: &Path, args: &[&str]) {
    output_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// Run `cmd` to completion, requiring exit status 0; a failure shows what
/// it printed on both streams.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
