//! Who is looking at the UI and what they may do: the registry's own access
//! control, applied to pages.
//!
//! - No auth configured: everyone may do everything (the embedded default).
//! - htpasswd: like `/v2/`, a logged-in user may do everything; nobody
//!   else sees anything.
//! - Token auth with Berth's own token server: the token server checks the
//!   login and its ACL decides, repository by repository, exactly as for a
//!   token request; anonymous visitors get the anonymous rules when the
//!   token server issues anonymous tokens.
//! - Token auth with an outside token server: that server decides, asked
//!   for a token per page (see [`super::realm`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::http::HeaderMap;

use super::realm::{Credential, Realm, RealmError};
use crate::{
    auth::{token_server::TokenServer, Authenticator},
    config::Config,
};

/// Repositories one list page may ask an outside token server about (a
/// token request per 50): beyond, the page stops like at `ui.scanlimit`.
const REALM_SCAN_LIMIT: usize = 2_000;

/// How the UI decides.
pub enum Gate {
    Open,
    Htpasswd(Arc<Authenticator>),
    TokenServer(Arc<TokenServer>),
    /// `auth.token` whose realm is not this process's token server.
    Realm(Arc<Authenticator>, Box<Realm>),
}

impl Gate {
    pub fn new(
        cfg: &Config,
        auth: Option<Arc<Authenticator>>,
        token_server: Option<Arc<TokenServer>>,
    ) -> Result<Gate, String> {
        Ok(match (auth, token_server) {
            (None, _) => Gate::Open,
            (Some(a), _) if matches!(*a, Authenticator::Htpasswd(_)) => Gate::Htpasswd(a),
            (Some(_), Some(ts)) => Gate::TokenServer(ts),
            (Some(a), None) => {
                let Authenticator::Token { cfg: token, .. } = &*a else {
                    unreachable!("htpasswd is matched above")
                };
                let realm = Realm::new(token, cfg)?;
                Gate::Realm(a, Box::new(realm))
            }
        })
    }

    /// Whether the UI has a login form.
    pub fn has_login(&self) -> bool {
        !matches!(self, Gate::Open)
    }

    /// How much of the catalog one list page may look at.
    pub fn scan_limit(&self, configured: usize) -> usize {
        match self {
            Gate::Realm(..) => configured.min(REALM_SCAN_LIMIT),
            _ => configured,
        }
    }
}

/// One request's viewer.
pub struct Viewer<'a> {
    gate: &'a Gate,
    /// Logged in as.
    pub account: Option<String>,
    labels: Option<BTreeMap<String, Vec<String>>>,
    /// An outside token server's refresh token for the account.
    refresh: Option<String>,
    ip: Option<IpAddr>,
    /// `storage.delete.enabled`, and not read-only.
    deletes_allowed: bool,
    /// An outside token server refused this anonymous visitor once: it
    /// will again, so it is not asked again in this request.
    anonymous_refused: AtomicBool,
}

/// What a viewer may do in one repository.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rights {
    pub pull: bool,
    pub delete: bool,
}

/// The decision could not be made: the page shows nothing it may not.
#[derive(Debug)]
pub enum Undecided {
    /// An outside token server out of reach: 503, retryable.
    Unreachable(String),
    /// It no longer takes this login's refresh token (revoked, expired):
    /// the viewer logs in again.
    LoginLapsed,
}

/// What a viewer brings with them.
pub struct Visitor<'a> {
    pub account: Option<String>,
    pub labels: Option<BTreeMap<String, Vec<String>>>,
    pub refresh: Option<String>,
    pub headers: &'a HeaderMap,
    pub peer: Option<SocketAddr>,
}

impl<'a> Viewer<'a> {
    pub fn new(gate: &'a Gate, visitor: Visitor<'_>, deletes_allowed: bool) -> Viewer<'a> {
        let ip = match gate {
            Gate::TokenServer(ts) => ts.client_ip(visitor.headers, visitor.peer),
            _ => None,
        };
        Viewer {
            gate,
            account: visitor.account,
            labels: visitor.labels,
            refresh: visitor.refresh,
            ip,
            deletes_allowed,
            anonymous_refused: AtomicBool::new(false),
        }
    }

    /// Whether this viewer must log in before seeing anything.
    pub fn must_log_in(&self) -> bool {
        match self.gate {
            Gate::Open => false,
            Gate::Htpasswd(_) => self.account.is_none(),
            Gate::TokenServer(ts) => self.account.is_none() && !ts.allows_anonymous(),
            // The realm decides whether anonymous visitors see anything.
            Gate::Realm(..) => false,
        }
    }

    /// What this viewer may do in repository `name`.
    pub async fn rights(&self, name: &str) -> Result<Rights, Undecided> {
        let all = self
            .rights_of(std::slice::from_ref(&name.to_string()))
            .await?;
        Ok(all[0])
    }

    /// What this viewer may do in each of `names`, in order.
    pub async fn rights_of(&self, names: &[String]) -> Result<Vec<Rights>, Undecided> {
        let everything = |yes: bool| Ok(vec![(yes, yes); names.len()]);
        let decided: Result<Vec<(bool, bool)>, Undecided> = match self.gate {
            Gate::Open => everything(true),
            Gate::Htpasswd(_) => everything(self.account.is_some()),
            Gate::TokenServer(_) if self.must_log_in() => everything(false),
            Gate::TokenServer(ts) => {
                let account = self.account.as_deref().unwrap_or("");
                Ok(names
                    .iter()
                    .map(|n| {
                        let actions =
                            ts.repository_actions(account, self.labels.as_ref(), n, self.ip);
                        has_pull_delete(&actions)
                    })
                    .collect())
            }
            Gate::Realm(_, _) if self.anonymous_refused.load(Ordering::Relaxed) => {
                everything(false)
            }
            Gate::Realm(auth, realm) => {
                let Authenticator::Token { verifier, .. } = &**auth else {
                    unreachable!("a realm gate holds token auth")
                };
                let who = match &self.refresh {
                    Some(rt) => Credential::Refresh(rt),
                    None => Credential::Anonymous,
                };
                match realm.repository_actions(verifier, &who, names).await {
                    Ok(all) => Ok(all.iter().map(|a| has_pull_delete(a)).collect()),
                    // No anonymous access at all: nothing to show.
                    Err(RealmError::Refused(_)) if self.refresh.is_none() => {
                        self.anonymous_refused.store(true, Ordering::Relaxed);
                        everything(false)
                    }
                    Err(RealmError::Refused(_)) => Err(Undecided::LoginLapsed),
                    Err(RealmError::Unavailable(why)) => Err(Undecided::Unreachable(why)),
                    Err(RealmError::Throttled(_)) => {
                        Err(Undecided::Unreachable("throttled".into()))
                    }
                }
            }
        };
        Ok(decided?
            .into_iter()
            .map(|(pull, delete)| Rights {
                pull,
                delete: pull && delete && self.deletes_allowed,
            })
            .collect())
    }
}

fn has_pull_delete(actions: &[String]) -> (bool, bool) {
    let has = |a: &str| actions.iter().any(|x| x == a || x == "*");
    (has("pull"), has("delete"))
}
