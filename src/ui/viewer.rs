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
//! - Token auth with an outside realm: the UI cannot ask that realm what an
//!   account may do without keeping its password, so it refuses to show
//!   anything (see [`Gate::Unsupported`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::http::HeaderMap;

use crate::auth::{token_server::TokenServer, Authenticator};

/// How the UI decides.
pub enum Gate {
    Open,
    Htpasswd(Arc<Authenticator>),
    TokenServer(Arc<TokenServer>),
    /// `auth.token` with a realm that is not this process's token server.
    Unsupported,
}

impl Gate {
    pub fn new(auth: Option<Arc<Authenticator>>, token_server: Option<Arc<TokenServer>>) -> Gate {
        match (auth, token_server) {
            (None, _) => Gate::Open,
            (Some(a), _) if matches!(*a, Authenticator::Htpasswd(_)) => Gate::Htpasswd(a),
            (Some(_), Some(ts)) => Gate::TokenServer(ts),
            (Some(_), None) => Gate::Unsupported,
        }
    }

    /// Whether the UI has a login form.
    pub fn has_login(&self) -> bool {
        matches!(self, Gate::Htpasswd(_) | Gate::TokenServer(_))
    }
}

/// One request's viewer.
pub struct Viewer<'a> {
    gate: &'a Gate,
    /// Logged in as.
    pub account: Option<String>,
    labels: Option<BTreeMap<String, Vec<String>>>,
    ip: Option<IpAddr>,
    /// `storage.delete.enabled`, and not read-only.
    deletes_allowed: bool,
}

/// What a viewer may do in one repository.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rights {
    pub pull: bool,
    pub delete: bool,
}

impl<'a> Viewer<'a> {
    pub fn new(
        gate: &'a Gate,
        account: Option<String>,
        labels: Option<BTreeMap<String, Vec<String>>>,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        deletes_allowed: bool,
    ) -> Viewer<'a> {
        let ip = match gate {
            Gate::TokenServer(ts) => ts.client_ip(headers, peer),
            _ => None,
        };
        Viewer {
            gate,
            account,
            labels,
            ip,
            deletes_allowed,
        }
    }

    /// Whether this viewer must log in before seeing anything.
    pub fn must_log_in(&self) -> bool {
        match self.gate {
            Gate::Open => false,
            Gate::Htpasswd(_) => self.account.is_none(),
            Gate::TokenServer(ts) => self.account.is_none() && !ts.allows_anonymous(),
            Gate::Unsupported => true,
        }
    }

    /// What this viewer may do in repository `name`.
    pub fn rights(&self, name: &str) -> Rights {
        let (pull, delete) = match self.gate {
            Gate::Open => (true, true),
            Gate::Htpasswd(_) => (self.account.is_some(), self.account.is_some()),
            Gate::TokenServer(ts) => {
                if self.must_log_in() {
                    (false, false)
                } else {
                    let account = self.account.as_deref().unwrap_or("");
                    let actions =
                        ts.repository_actions(account, self.labels.as_ref(), name, self.ip);
                    let has = |a: &str| actions.iter().any(|x| x == a);
                    (has("pull"), has("delete"))
                }
            }
            Gate::Unsupported => (false, false),
        };
        Rights {
            pull,
            delete: pull && delete && self.deletes_allowed,
        }
    }
}
