//! CPU accounting for the run: what this process used itself, what its
//! children used (servers, dd, docker…: counted once they have been waited
//! for), and what the whole machine used, so that a run disturbed by other
//! work on the machine says so.

/// A point-in-time reading, all in CPU seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSnapshot {
    /// This process alone (the client).
    pub own: f64,
    /// Waited-for descendants.
    pub children: f64,
    /// Every core's non-idle time (user, nice, system, irq, softirq).
    pub machine_busy: f64,
    /// Time the hypervisor gave to someone else.
    pub steal: f64,
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (busy, steal) seconds from the first line of /proc/stat.
fn machine() -> (f64, f64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    parse_proc_stat(&text, unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn parse_proc_stat(text: &str, ticks_per_s: f64) -> (f64, f64) {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let tps = if ticks_per_s > 0.0 {
        ticks_per_s
    } else {
        100.0
    };
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    (busy / tps, at(7) / tps)
}

/// CPU seconds (user + system, all threads) a live process has used so far.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let tps = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / if tps > 0.0 { tps } else { 100.0 })
}

/// Summed CPU seconds of several live processes.
pub fn processes_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| process_seconds(*p)).sum()
}

pub fn snapshot() -> CpuSnapshot {
    let (machine_busy, steal) = machine();
    CpuSnapshot {
        own: rusage(libc::RUSAGE_SELF),
        children: rusage(libc::RUSAGE_CHILDREN),
        machine_busy,
        steal,
    }
}

/// A note on CPU use between two snapshots (take `end` after every child
/// has been stopped and waited for).
pub fn summary(start: &CpuSnapshot, end: &CpuSnapshot, wall: f64) -> String {
    let own = end.own - start.own;
    let children = end.children - start.children;
    let busy = end.machine_busy - start.machine_busy;
    let others = (busy - own - children).max(0.0);
    let steal = end.steal - start.steal;
    let mut s = format!(
        "CPU over {wall:.0} s: client {own:.1} s (one thread), servers and tools {children:.1} s, \
         other processes on this machine ~{others:.1} s, steal {steal:.1} s"
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    if wall > 0.0 && (others + steal) / (wall * cores) > 0.05 {
        s.push_str(" — the machine was not idle: figures are noisier than usual");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_seconds() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_seconds(std::process::id()).is_some());
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 0 50 1000 10 5 5 20 0 0\ncpu0 1 2 3\n";
        let (busy, steal) = parse_proc_stat(text, 100.0);
        assert!((busy - 1.6).abs() < 1e-9);
        assert!((steal - 0.2).abs() < 1e-9);
    }
}
