//! People logging in against a directory (`token_server.ldap`): OpenLDAP,
//! Active Directory or anything that speaks LDAPv3.
//!
//! A login is: connect (the `url`s in order; `ldaps://`, or StartTLS on
//! `ldap://`; the certificate always verified against the system's roots
//! and `cafile`), bind as the service account, search `basedn` for the one
//! entry `userfilter` finds with the login name escaped (RFC 4515: a `*`
//! or `)` in a name matches nothing but itself), then bind as that entry
//! with the password given. Its groups — the DNs in `groupattribute`
//! (`memberOf`), or the entries a group search finds — become the values
//! of the `grouplabel` label (each group's first RDN value: `platform` for
//! `cn=platform,ou=groups,…`), which ACL rules match like static labels.
//!
//! - An empty password is refused before anything is sent: LDAP takes it
//!   as an unauthenticated bind, which "succeeds".
//! - A success is remembered for `cachettl`, keyed by a hash of the name
//!   and password, as htpasswd's bcrypt successes are.
//! - A directory that cannot be reached (or answers too slowly:
//!   `timeout`) fails the login closed with 503; a wrong password or an
//!   unknown user is a failed login (401, counted by the throttle).
//! - Up to 4 connections are kept open between logins (a login takes one,
//!   binds it as the service account again, and gives it back); one that
//!   broke meanwhile is replaced by a fresh connection.
//! - Refresh tokens are not issued for directory logins: a removed or
//!   disabled account must stop working when its access token expires.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use sha2::{Digest as _, Sha256};

use super::{Identity, Refusal};
use crate::config::{tls::crypto_provider, token_server::LdapConfig};

/// LDAP's result code for a wrong password (or a locked account).
const INVALID_CREDENTIALS: u32 = 49;
/// Connections kept open between logins.
const POOL: usize = 4;
/// Successes remembered at most (oldest dropped first).
const CACHE_ENTRIES: usize = 10_000;

pub struct Directory {
    cfg: LdapConfig,
    bind_password: String,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    cache_ttl: Duration,
    remembered: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    /// Connections kept between logins (each starts with the service bind).
    pool: Mutex<Vec<Connection>>,
}

/// An open connection and the task that drives it.
struct Connection {
    ldap: ldap3::Ldap,
    driver: tokio::task::JoinHandle<()>,
}

impl Directory {
    /// `None` without a `ldap` section; errors name the key.
    pub fn new(cfg: Option<&LdapConfig>) -> Result<Option<Directory>, String> {
        let Some(cfg) = cfg else { return Ok(None) };
        let (timeout, cache_ttl) = cfg.durations()?;
        let bind_password = if cfg.bindpasswordfile.is_empty() {
            cfg.bindpassword.clone()
        } else {
            std::fs::read_to_string(&cfg.bindpasswordfile)
                .map_err(|e| format!("token_server.ldap.bindpasswordfile: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_string()
        };
        // Always our own config (ring, our roots): ldap3's default needs a
        // process-wide provider and ends up with no roots at all when one
        // system certificate fails to load.
        let tls = Arc::new(client_config(&cfg.cafile)?);
        Ok(Some(Directory {
            cfg: cfg.clone(),
            bind_password,
            tls,
            timeout,
            cache_ttl,
            remembered: Mutex::default(),
            pool: Mutex::default(),
        }))
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Identity, Refusal> {
        if user.is_empty() || password.is_empty() {
            return Err(Refusal::Invalid("empty user name or password".into()));
        }
        let key = cache_key(user, password);
        if let Some(p) = self.recall(&key) {
            return Ok(p);
        }
        // A pooled connection first; one that broke meanwhile is dropped
        // and the login goes on with a fresh one.
        if let Some(mut conn) = self.pooled() {
            match self.flow(&mut conn.ldap, user, password).await {
                Err(Refusal::Unavailable(e)) => {
                    tracing::debug!("ldap: pooled connection: {e}");
                    conn.driver.abort();
                }
                done => {
                    self.give_back(conn);
                    return self.settle(key, done);
                }
            }
        }
        let mut last = None;
        for url in &self.cfg.url {
            let mut conn = match self.connect(url).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(url, "ldap: {e}");
                    last = Some(e);
                    continue;
                }
            };
            match self.flow(&mut conn.ldap, user, password).await {
                Err(Refusal::Unavailable(e)) => {
                    conn.driver.abort();
                    tracing::warn!(url, "ldap: {e}");
                    last = Some(e);
                }
                done => {
                    self.give_back(conn);
                    return self.settle(key, done);
                }
            }
        }
        Err(Refusal::Unavailable(last.unwrap_or_default()))
    }

    /// Remember a success.
    fn settle(&self, key: [u8; 32], done: Result<Identity, Refusal>) -> Result<Identity, Refusal> {
        if let Ok(identity) = &done {
            self.remember(key, identity);
        }
        done
    }

    async fn connect(&self, url: &str) -> Result<Connection, String> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.cfg.starttls && url.starts_with("ldap://"))
            .set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("ldap connection: {e}");
            }
        });
        Ok(Connection { ldap, driver })
    }

    fn pooled(&self) -> Option<Connection> {
        self.pool.lock().unwrap().pop()
    }

    /// Keep `conn` for the next login, unless the pool is full.
    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < POOL && !conn.driver.is_finished() {
            pool.push(conn);
        } else {
            conn.driver.abort();
        }
    }

    /// One login on `ldap`: the service bind, the user's search and bind,
    /// the groups.
    async fn flow(
        &self,
        ldap: &mut ldap3::Ldap,
        user: &str,
        password: &str,
    ) -> Result<Identity, Refusal> {
        let down = |e: ldap3::LdapError| Refusal::Unavailable(e.to_string());
        if !self.cfg.binddn.is_empty() {
            ldap.with_timeout(self.timeout)
                .simple_bind(&self.cfg.binddn, &self.bind_password)
                .await
                .map_err(down)?
                .success()
                .map_err(|e| {
                    Refusal::Unavailable(format!("the service account's bind failed: {e}"))
                })?;
        }
        let template = match self.cfg.userfilter.as_str() {
            "" => "(uid={username})",
            f => f,
        };
        let filter = template.replace("{username}", &ldap_escape(user));
        let mut attrs = vec!["1.1".to_string()];
        let group_attr = self.group_attribute();
        if let Some(a) = group_attr {
            attrs = vec![a.to_string()];
        }
        let (entries, _) = ldap
            .with_timeout(self.timeout)
            .search(&self.cfg.basedn, Scope::Subtree, &filter, attrs)
            .await
            .map_err(down)?
            .success()
            .map_err(down)?;
        let mut found: Vec<SearchEntry> = entries.into_iter().map(SearchEntry::construct).collect();
        if found.len() != 1 {
            return Err(Refusal::Invalid(format!(
                "{} entries match the user filter",
                found.len()
            )));
        }
        let entry = found.remove(0);
        let bound = ldap
            .with_timeout(self.timeout)
            .simple_bind(&entry.dn, password)
            .await
            .map_err(down)?;
        match bound.rc {
            0 => {}
            INVALID_CREDENTIALS => {
                return Err(Refusal::Invalid("wrong password".into()));
            }
            rc => {
                return Err(Refusal::Invalid(format!(
                    "the user's bind was refused ({rc}: {})",
                    bound.text
                )))
            }
        }
        let mut groups: Vec<String> = match group_attr {
            Some(a) => entry
                .attrs
                .get(a)
                .map(|dns| dns.iter().filter_map(|dn| first_rdn_value(dn)).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !self.cfg.groupbasedn.is_empty() {
            // Searched as the user just bound: directories let members
            // read their groups; a service-account-only ACL would need
            // the service bind again.
            if !self.cfg.binddn.is_empty() {
                ldap.with_timeout(self.timeout)
                    .simple_bind(&self.cfg.binddn, &self.bind_password)
                    .await
                    .map_err(down)?;
            }
            let template = match self.cfg.groupfilter.as_str() {
                "" => "(member={dn})",
                f => f,
            };
            let filter = template.replace("{dn}", &ldap_escape(entry.dn.as_str()));
            let (entries, _) = ldap
                .with_timeout(self.timeout)
                .search(&self.cfg.groupbasedn, Scope::Subtree, &filter, vec!["cn"])
                .await
                .map_err(down)?
                .success()
                .map_err(down)?;
            for e in entries.into_iter().map(SearchEntry::construct) {
                match e.attrs.get("cn").and_then(|v| v.first()) {
                    Some(cn) => groups.push(cn.clone()),
                    None => groups.extend(first_rdn_value(&e.dn)),
                }
            }
        }
        groups.sort();
        groups.dedup();
        let label = match self.cfg.grouplabel.as_str() {
            "" => "group",
            l => l,
        };
        Ok(Identity {
            account: user.to_string(),
            labels: BTreeMap::from([(label.to_string(), groups)]),
        })
    }

    /// The attribute listing a user's groups; `None` when groups are
    /// searched instead (or not wanted).
    fn group_attribute(&self) -> Option<&str> {
        match self.cfg.groupattribute.as_str() {
            "" if self.cfg.groupbasedn.is_empty() => Some("memberOf"),
            "" | "-" => None,
            a => Some(a),
        }
    }

    fn recall(&self, key: &[u8; 32]) -> Option<Identity> {
        let map = self.remembered.lock().unwrap();
        map.get(key)
            .filter(|(_, at)| at.elapsed() < self.cache_ttl)
            .map(|(p, _)| p.clone())
    }

    fn remember(&self, key: [u8; 32], identity: &Identity) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut map = self.remembered.lock().unwrap();
        if map.len() >= CACHE_ENTRIES {
            let ttl = self.cache_ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (identity.clone(), Instant::now()));
    }
}

/// A keyed digest of a login: a memory dump does not give the password away.
fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"berth-ldap\0");
    h.update(user.as_bytes());
    h.update(b"\0");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// `platform` for `cn=platform,ou=groups,dc=example,dc=org`.
fn first_rdn_value(dn: &str) -> Option<String> {
    let first = dn.split(',').next()?;
    let (_, value) = first.split_once('=')?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The system's roots, and `cafile`'s if given.
fn client_config(cafile: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if cafile.is_empty() {
        return finish(roots);
    }
    let pem = std::fs::read(cafile).map_err(|e| format!("token_server.ldap.cafile: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("token_server.ldap.cafile: {cafile} is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!(
            "token_server.ldap.cafile: no certificate in {cafile}"
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("token_server.ldap.cafile: {e}"))?;
    }
    finish(roots)
}

fn finish(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_the_first_rdn_value() {
        assert_eq!(
            first_rdn_value("cn=platform,ou=groups,dc=example,dc=org").as_deref(),
            Some("platform")
        );
        assert_eq!(
            first_rdn_value("CN=Domain Admins,CN=Users,DC=corp").as_deref(),
            Some("Domain Admins")
        );
        assert_eq!(first_rdn_value("garbage"), None);
    }

    #[test]
    fn filter_metacharacters_in_a_name_are_escaped() {
        let f = "(uid={username})".replace("{username}", &ldap_escape("eve*)(uid=*"));
        assert_eq!(f, "(uid=eve\\2a\\29\\28uid=\\2a)");
    }
}
