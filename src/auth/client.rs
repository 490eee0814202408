//! Which client a login comes from, for the failed-login throttle: the TCP
//! peer, or behind trusted proxies (`http.trustedproxies`) the right-most
//! X-Forwarded-For hop that is not one of them. Both `/v2/` Basic auth and
//! the token server ask the same [`ClientAddress`].
//!
//! Only hops appended by trusted proxies are believed: a client can put
//! anything at the left of the header, so the walk goes from the right and
//! stops at the first address no trusted proxy would have forwarded from.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// An IP network (`10.0.0.0/8`, `::1`, a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let (net, ip) = (self.addr.to_canonical(), ip.to_canonical());
        let (a, b, bits) = match (net, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let prefix = u32::from(self.prefix).min(bits);
        if prefix == 0 {
            return true;
        }
        let shift = bits - prefix;
        (a >> shift) == (b >> shift)
    }
}

/// Resolves a request's client address.
#[derive(Debug, Default)]
pub struct ClientAddress {
    trusted: Vec<IpNet>,
}

impl ClientAddress {
    /// `key` names the setting in errors (`http.trustedproxies`).
    pub fn new(key: &str, trusted: &[String]) -> Result<ClientAddress, String> {
        let trusted = trusted
            .iter()
            .map(|p| IpNet::parse(p).map_err(|e| format!("{key}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ClientAddress { trusted })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The client: the TCP peer, or when that is a trusted proxy, the
    /// right-most X-Forwarded-For hop that is not. None without a peer.
    pub fn resolve(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        let mut client = peer?.ip().to_canonical();
        if !self.trusted(client) {
            return Some(client);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                break; // garbage: keep the last hop we could believe
            };
            client = ip.to_canonical();
            if !self.trusted(client) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 1234))
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn resolver(trusted: &[&str]) -> ClientAddress {
        let t: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
        ClientAddress::new("http.trustedproxies", &t).unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let h = xff("203.0.113.9");
        assert_eq!(resolver(&[]).resolve(&h, peer("10.0.0.1")), ip("10.0.0.1"));

        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(r.resolve(&h, peer("10.0.0.1")), ip("203.0.113.9"));
        // A client forging the header gets only its own hop believed.
        let forged = xff("1.2.3.4, 203.0.113.9, 10.0.0.2");
        assert_eq!(r.resolve(&forged, peer("10.0.0.1")), ip("203.0.113.9"));
        // Not from a proxy: the header is ignored.
        assert_eq!(r.resolve(&h, peer("198.51.100.1")), ip("198.51.100.1"));
        // Garbage from the proxy: the proxy itself is the best we know.
        assert_eq!(r.resolve(&xff("bogus"), peer("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(r.resolve(&HeaderMap::new(), None), None);
        // Several header lines read as one list, in order.
        let mut two = xff("198.51.100.7");
        two.append("x-forwarded-for", "10.0.0.3".parse().unwrap());
        assert_eq!(r.resolve(&two, peer("10.0.0.1")), ip("198.51.100.7"));
    }

    #[test]
    fn bad_entries_name_the_key() {
        let e = ClientAddress::new("http.trustedproxies", &["proxy".into()]).unwrap_err();
        assert!(e.starts_with("http.trustedproxies: "), "{e}");
    }

    #[test]
    fn ip_nets() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(
            n.contains("::ffff:10.0.0.1".parse().unwrap()),
            "v4-mapped v6"
        );
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(!IpNet::parse("::1")
            .unwrap()
            .contains("::2".parse().unwrap()));
        assert!(IpNet::parse("nope").is_err());
        assert!(IpNet::parse("10.0.0.0/33").is_err());
    }
}
