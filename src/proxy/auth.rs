//! Logging in to the upstream the way docker does: a request without
//! credentials, a `401` whose `WWW-Authenticate` names the scheme, then
//! either Basic with the configured account or the bearer-token dance
//! (a GET of the challenge's `realm` with its `service` and `scope`, Basic
//! there when an account is configured) whose token is remembered per
//! scope until shortly before it expires.
//!
//! The account is only sent to a realm on the upstream's own host or a
//! sibling of it (`auth.docker.io` for `registry-1.docker.io`): a
//! challenge naming another host would otherwise harvest it
//! (distribution's CVE-2026-33540).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token is dropped this long before the upstream said it expires, so a
/// request never leaves with one about to lapse.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// distribution's floor and default for `expires_in` (the token spec's 60 s).
const MIN_TOKEN_LIFE: u64 = 60;

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` value: the first challenge of a scheme
/// Berth speaks (Bearer preferred over Basic).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = auth_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v", k2=v2` pairs; quoted values may hold commas and `\"`.
fn auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.insert(key, value);
    }
}

/// Whether the configured account may go to `realm` of a challenge sent by
/// `upstream`: the same host, or both under the same parent domain.
pub fn may_send_account(upstream: &reqwest::Url, realm: &reqwest::Url) -> bool {
    let (Some(u), Some(r)) = (upstream.host_str(), realm.host_str()) else {
        return false;
    };
    if u.eq_ignore_ascii_case(r) {
        return true;
    }
    let parent = |h: &str| {
        let labels: Vec<&str> = h.rsplitn(3, '.').collect();
        (labels.len() == 3 && h.parse::<std::net::IpAddr>().is_err())
            .then(|| format!("{}.{}", labels[1], labels[0]).to_ascii_lowercase())
    };
    matches!((parent(u), parent(r)), (Some(a), Some(b)) if a == b)
}

/// The body of a token answer (the token spec names it either way).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Parse a token server's answer: the token and how long to keep it.
pub fn parse_token(body: &[u8]) -> Result<(String, Duration), String> {
    let a: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    let token = a
        .access_token
        .or(a.token)
        .filter(|t| !t.is_empty())
        .ok_or("token answer has no token")?;
    let life = Duration::from_secs(a.expires_in.unwrap_or(MIN_TOKEN_LIFE).max(MIN_TOKEN_LIFE));
    Ok((token, life.saturating_sub(EXPIRY_MARGIN)))
}

/// Bearer tokens by scope, until they expire.
#[derive(Default)]
pub struct Tokens {
    by_scope: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tokens {
    pub fn get(&self, scope: &str) -> Option<String> {
        let map = self.by_scope.lock().unwrap();
        map.get(scope)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }

    pub fn put(&self, scope: &str, token: String, life: Duration) {
        let mut map = self.by_scope.lock().unwrap();
        map.retain(|_, (_, until)| *until > Instant::now());
        map.insert(scope.to_string(), (token, Instant::now() + life));
    }

    pub fn forget(&self, scope: &str) {
        self.by_scope.lock().unwrap().remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let p = auth_params(r#"realm="a,b", scope="x\"y", service=plain"#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["scope"], "x\"y");
        assert_eq!(p["service"], "plain");
    }

    #[test]
    fn the_account_goes_only_to_the_upstream_or_a_sibling() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let hub = u("https://registry-1.docker.io");
        assert!(may_send_account(&hub, &u("https://auth.docker.io/token")));
        assert!(may_send_account(&hub, &u("https://registry-1.docker.io/t")));
        assert!(!may_send_account(&hub, &u("https://evil.example/token")));
        assert!(!may_send_account(
            &hub,
            &u("https://docker.io.evil.example/")
        ));
        let local = u("http://127.0.0.1:5000");
        assert!(may_send_account(&local, &u("http://127.0.0.1:5001/token")));
        assert!(!may_send_account(&local, &u("http://127.0.0.2/token")));
    }

    #[test]
    fn token_lifetimes_are_floored_and_kept_short_of_expiry() {
        let (t, life) = parse_token(br#"{"token":"a","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), life), ("a", Duration::from_secs(290)));
        let (t, life) = parse_token(br#"{"access_token":"b","token":"a"}"#).unwrap();
        assert_eq!((t.as_str(), life), ("b", Duration::from_secs(50)));
        assert!(parse_token(br#"{"token":""}"#).is_err());
    }
}
