//! File descriptors: the process's limit raised as far as it may go, and a
//! connection cap that cannot exhaust it.

/// Descriptors kept back from connections: log files, the storage driver's
/// open files and its HTTP pools (S3, Azure), Redis, webhooks, the debug
/// listener's own connections.
const RESERVED: u64 = 256;

/// Descriptors one connection may hold: its socket, and a file or backend
/// socket for the request it serves.
const PER_CONNECTION: u64 = 2;

/// The default cap however many descriptors there are: beyond this an idle
/// connection's buffers (~10–20 KiB each) start to matter more than the
/// descriptors.
const CEILING: u64 = 10_000;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (the usual container
/// default is 1024 soft over a much larger hard limit) and return the soft
/// limit now in force, if it could be read.
pub(super) fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur)
}

/// The connections `nofile` descriptors leave room for.
pub(super) fn connections_for(nofile: Option<u64>) -> usize {
    let room = match nofile {
        Some(n) => n.saturating_sub(RESERVED) / PER_CONNECTION,
        None => CEILING,
    };
    room.clamp(1, CEILING) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_the_descriptor_limit() {
        assert_eq!(connections_for(Some(1024)), 384);
        assert_eq!(connections_for(Some(20_000)), 9_872);
        assert_eq!(connections_for(Some(1 << 20)), 10_000);
        assert_eq!(connections_for(Some(100)), 1);
        assert_eq!(connections_for(None), 10_000);
        assert!(raise_nofile_limit().is_some_and(|n| n > 0));
    }
}
