//! Slows down password guessing: failed logins are counted per client
//! address, and past a threshold that client is refused (429 with
//! Retry-After) for 1 s, then 2 s, 4 s... up to a cap, without its
//! credentials being checked at all — so a blocked client costs no bcrypt.
//!
//! Refusing rather than delaying the response keeps no task or connection
//! open per attacker. A success does not clear the count: an attacker who
//! owns one account could otherwise interleave its logins with guesses. The
//! state is one small entry per address, bounded; IPv6 clients are counted
//! per /64, since one host usually holds a whole /64.
//!
//! Time is passed in (`now`), so the tests drive the clock.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::token_server::ThrottleConfig;

/// Bound on tracked addresses.
const CAPACITY: usize = 10_000;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    max_delay: Duration,
    capacity: usize,
    clients: Mutex<HashMap<IpAddr, Entry>>,
}

struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

impl Entry {
    /// Nothing left to remember: the count has lapsed and no block is running.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.last_failure) > window && now >= self.blocked_until
    }
}

/// Addresses that share a fate: v4 as is, v6 by /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

impl Throttle {
    pub fn new(cfg: &ThrottleConfig) -> Throttle {
        Throttle::with_capacity(cfg, CAPACITY)
    }

    fn with_capacity(cfg: &ThrottleConfig, capacity: usize) -> Throttle {
        Throttle {
            max_failures: cfg.maxfailures,
            window: Duration::from_secs(cfg.window),
            max_delay: Duration::from_secs(cfg.maxdelay.max(1)),
            capacity,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or how long `ip` must wait before trying credentials again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        match self.clients.lock().unwrap().get(&key(ip)) {
            Some(e) if e.blocked_until > now => Err(e.blocked_until - now),
            _ => Ok(()),
        }
    }

    /// Count a failed login from `ip`; returns its failures in the window.
    pub fn failure(&self, ip: IpAddr, now: Instant) -> u32 {
        if self.max_failures == 0 {
            return 0;
        }
        let mut clients = self.clients.lock().unwrap();
        let k = key(ip);
        if !clients.contains_key(&k) && clients.len() >= self.capacity {
            self.make_room(&mut clients, now);
        }
        let e = clients.entry(k).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.saturating_duration_since(e.last_failure) > self.window {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures >= self.max_failures {
            let doublings = (e.failures - self.max_failures).min(20);
            let delay = Duration::from_secs(1u64 << doublings).min(self.max_delay);
            e.blocked_until = now + delay;
        }
        e.failures
    }

    /// Drop lapsed entries; if none lapsed, the one idle longest.
    fn make_room(&self, clients: &mut HashMap<IpAddr, Entry>, now: Instant) {
        clients.retain(|_, e| !e.expired(now, self.window));
        if clients.len() >= self.capacity {
            if let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(k, _)| *k)
            {
                clients.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(maxfailures: u32) -> Throttle {
        Throttle::new(&ThrottleConfig {
            maxfailures,
            window: 300,
            maxdelay: 60,
        })
    }

    const A: &str = "192.0.2.1";
    const B: &str = "192.0.2.2";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn blocks_after_threshold_and_backs_off_exponentially() {
        let t = throttle(5);
        let t0 = Instant::now();
        for i in 1..5 {
            assert_eq!(t.failure(ip(A), t0), i);
            assert!(t.check(ip(A), t0).is_ok(), "failure {i} is free");
        }
        t.failure(ip(A), t0);
        assert_eq!(t.check(ip(A), t0), Err(secs(1)));
        assert!(t.check(ip(B), t0).is_ok(), "other clients unaffected");
        // Waited it out, failed again: twice as long, and so on.
        let t1 = t0 + secs(1);
        assert!(t.check(ip(A), t1).is_ok());
        t.failure(ip(A), t1);
        assert_eq!(t.check(ip(A), t1), Err(secs(2)));
        let mut now = t1 + secs(2);
        for expected in [4, 8, 16, 32, 60, 60] {
            t.failure(ip(A), now);
            assert_eq!(
                t.check(ip(A), now),
                Err(secs(expected)),
                "capped at maxdelay"
            );
            now += secs(expected);
        }
    }

    #[test]
    fn window_forgets_old_failures() {
        let t = throttle(3);
        let t0 = Instant::now();
        t.failure(ip(A), t0);
        t.failure(ip(A), t0 + secs(100));
        // More than `window` after the last failure: counting starts over.
        let later = t0 + secs(100) + secs(301);
        assert_eq!(t.failure(ip(A), later), 1);
        assert!(t.check(ip(A), later).is_ok());
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_v4_as_v4() {
        let t = throttle(2);
        let t0 = Instant::now();
        t.failure(ip("2001:db8:1:2::1"), t0);
        t.failure(ip("2001:db8:1:2::ffff"), t0);
        assert!(t.check(ip("2001:db8:1:2::42"), t0).is_err());
        assert!(t.check(ip("2001:db8:1:3::1"), t0).is_ok());
        t.failure(ip("::ffff:192.0.2.9"), t0);
        t.failure(ip("192.0.2.9"), t0);
        assert!(t.check(ip("192.0.2.9"), t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::with_capacity(
            &ThrottleConfig {
                maxfailures: 5,
                window: 300,
                maxdelay: 60,
            },
            100,
        );
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let addr = IpAddr::from(u32::to_be_bytes(0x0a00_0000 + i));
            t.failure(addr, t0 + Duration::from_millis(i as u64));
        }
        assert!(t.tracked() <= 100, "tracked {}", t.tracked());
        // The newest clients are the ones kept.
        let newest = IpAddr::from(u32::to_be_bytes(0x0a00_0000 + 999));
        assert_eq!(t.failure(newest, t0 + secs(2)), 2);
    }

    #[test]
    fn zero_disables() {
        let t = throttle(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            t.failure(ip(A), t0);
        }
        assert!(t.check(ip(A), t0).is_ok());
    }
}
