//! What the web UI asks of the token server: check a login typed into its
//! form, and say which actions the ACL gives an account on a repository —
//! the same decisions a token request would get, without a token.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use axum::http::{header, HeaderMap};

use super::{acl, TokenServer};

/// A login the token server accepted.
pub struct Checked {
    pub account: String,
    /// From the directory or an ID token; `None`: the account's configured
    /// labels, read again at every decision.
    pub labels: Option<BTreeMap<String, Vec<String>>>,
}

/// A login the token server refused, as a token client would hear it.
#[derive(Debug)]
pub struct Refused {
    /// 401 (bad credentials), 429 (throttled, queue full), 503 (directory
    /// or issuer unreachable).
    pub status: u16,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

/// The actions the UI offers.
const UI_ACTIONS: [&str; 3] = ["pull", "push", "delete"];

impl TokenServer {
    /// Who `headers` and `peer` come from (`http.trustedproxies`).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        self.clients.resolve(headers, peer)
    }

    /// Whether anonymous visitors get tokens (then anonymous ACL rules apply).
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// A login from the UI's form, checked as a token request's Basic
    /// credentials would be: throttle, local accounts, directory, ID tokens.
    pub async fn check_login(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Checked, Refused> {
        match self.login(user, password, client).await {
            Ok(login) if !login.account.is_empty() => Ok(Checked {
                account: login.account,
                labels: login.labels,
            }),
            Ok(_) => Err(Refused {
                status: 401,
                message: "invalid username or password".into(),
                retry_after: None,
            }),
            Err(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                    .await
                    .unwrap_or_default();
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error_description"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "login refused".into());
                Err(Refused {
                    status,
                    message,
                    retry_after,
                })
            }
        }
    }

    /// The actions of pull, push and delete that `account` ("" for
    /// anonymous) has on repository `name`.
    pub fn repository_actions(
        &self,
        account: &str,
        labels: Option<&BTreeMap<String, Vec<String>>>,
        name: &str,
        ip: Option<IpAddr>,
    ) -> Vec<String> {
        let who = self.subject(account, labels, ip);
        let requested = UI_ACTIONS.map(String::from);
        self.acl
            .decide(&who, "repository", name)
            .map(|d| acl::grant(&requested, d.actions))
            .unwrap_or_default()
    }
}
