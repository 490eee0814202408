//! `auth.htpasswd`: Basic credentials on `/v2/`, checked against the
//! htpasswd file, with failed logins throttled per client address like the
//! token server's ([`Throttle`], `auth.htpasswd.throttle`).
//!
//! docker sends the credentials with every request, so a remembered success
//! ([`Htpasswd::remembered`]) is let through without consulting the
//! throttle: it costs no bcrypt and proves nothing new, and a CI job behind
//! the same NAT as a guesser keeps working while the guesser waits.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;

use super::{
    basic_credentials, bcrypt_queue, client::ClientAddress, htpasswd::Htpasswd, loggable,
    throttle::Throttle, Denial, Logins,
};
use crate::config::auth::HtpasswdConfig;

pub struct BasicAuth {
    realm: String,
    users: Htpasswd,
    throttle: Throttle,
    clients: Arc<ClientAddress>,
}

fn too_many(retry_after: Duration, message: String) -> Denial {
    Denial::TooManyRequests {
        retry_after,
        message,
    }
}

impl BasicAuth {
    pub fn new(cfg: &HtpasswdConfig, logins: &Logins) -> Result<BasicAuth, String> {
        let users = Htpasswd::load(&cfg.path, logins.queue.clone())
            .map_err(|e| format!("auth.htpasswd.path: {e}"))?;
        Ok(BasicAuth {
            realm: cfg.realm.clone(),
            users,
            throttle: Throttle::new(&cfg.throttle),
            clients: logins.clients.clone(),
        })
    }

    fn challenge(&self, message: &str) -> Denial {
        Denial::Challenge {
            challenge: format!("Basic realm=\"{}\"", self.realm),
            message: message.into(),
        }
    }

    /// The user, or why not. `peer` is the TCP peer, if known.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<String, Denial> {
        let Some((user, password)) = basic_credentials(headers) else {
            return Err(self.challenge("authentication required"));
        };
        self.check_password(user, &password, headers, peer).await
    }

    /// One login (`/v2/` Basic credentials, or the web UI's form): the
    /// user, or why not — with the same throttle and bcrypt queue.
    pub async fn check_password(
        &self,
        user: String,
        password: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<String, Denial> {
        if self.users.remembered(&user, password) {
            return Ok(user);
        }
        let client = self.clients.resolve(headers, peer);
        if let Some(ip) = client {
            if let Err(wait) = self.throttle.check(ip, Instant::now()) {
                tracing::warn!(user = loggable(&user), client = %ip, "basic auth: throttled");
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(too_many(
                    Duration::from_secs(secs),
                    format!("too many failed logins from this address; retry in {secs} s"),
                ));
            }
        }
        match self.users.verify(&user, password).await {
            Ok(true) => Ok(user),
            Ok(false) => {
                let recent = client.map(|ip| self.throttle.failure(ip, Instant::now()));
                tracing::warn!(
                    user = loggable(&user),
                    client = ?client,
                    failures_from_client = ?recent,
                    "failed login"
                );
                Err(self.challenge("invalid username or password"))
            }
            Err(busy) => Err(too_many(bcrypt_queue::RETRY_AFTER, busy.to_string())),
        }
    }
}
