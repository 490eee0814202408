//! A Docker Registry HTTP API client for `loadtest run`: one keep-alive
//! connection per simulated client, authenticating the way docker does:
//! Basic credentials, or on a `401` with `WWW-Authenticate: Bearer …` the
//! token dance (GET realm?service=…&scope=… with the credentials, then the
//! token on every request for that repository).

use std::{collections::HashMap, net::SocketAddr, rc::Rc};

use anyhow::{anyhow, bail, Context as _, Result};
use http::{header, HeaderName, Method, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{basic_auth, drain, read_body, Client, ReqBody};

/// Where the registry is: `http://host:port` resolved once.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The URL's authority, sent as `Host`.
    pub authority: String,
}

/// `http://host[:port][/path?query]` → authority and path-and-query.
pub fn split_http_url(url: &str) -> Result<(String, String)> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => bail!("{url}: only http:// is supported by this client, not {s}://"),
        None => bail!("{url}: not an absolute URL"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("{url}: no host"))?
        .to_string();
    let authority = if uri.port().is_some() {
        authority
    } else {
        format!("{authority}:80")
    };
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    Ok((authority, path))
}

impl Endpoint {
    /// Resolve a registry URL (or a token realm).
    pub async fn resolve(url: &str) -> Result<(Endpoint, String)> {
        let (authority, path) = split_http_url(url)?;
        let addr = tokio::net::lookup_host(&authority)
            .await
            .with_context(|| format!("resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} has no address"))?;
        Ok((Endpoint { addr, authority }, path))
    }

    fn client(&self) -> Result<Client> {
        Client::new(self.addr).with_host(&self.authority)
    }
}

/// How a session proves who it is.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    /// Token endpoint to use instead of the challenge's realm.
    pub token_url: Option<String>,
}

impl Credentials {
    pub fn anonymous() -> Credentials {
        Credentials::default()
    }

    fn basic(&self) -> Option<String> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some(basic_auth(u, p)),
            _ => None,
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// `Bearer realm="https://…",service="reg",scope="repository:a:pull,push"`:
/// the scheme (lower-cased) and its parameters; quoted values may hold commas.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, mut rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    // Bounded: every iteration consumes at least one character of `rest`.
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        let (val, after) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), val);
        rest = after;
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The repository a `/v2/<name>/(blobs|manifests|tags)/…` path is about.
pub fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    let rest = rest.split('?').next()?;
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m).map(|i| &rest[..i]))
        .min_by_key(|name| name.len())
}

/// The token scope docker asks for: pull to read, pull and push to write.
pub fn scope_for(method: &Method, path: &str) -> Option<String> {
    let repo = repository_of(path)?;
    let actions = if matches!(*method, Method::GET | Method::HEAD) {
        "pull"
    } else {
        "pull,push"
    };
    Some(format!("repository:{repo}:{actions}"))
}

/// One simulated client: its connection, credentials and tokens.
pub struct Session {
    client: Client,
    creds: Rc<Credentials>,
    /// Sent proactively once a challenge said Basic (or credentials exist).
    basic: Option<String>,
    /// `scope` → `Bearer <token>`.
    tokens: HashMap<String, String>,
    /// Whether the registry asked for bearer tokens.
    bearer: bool,
    token_client: Option<(String, Client)>,
}

impl Session {
    pub fn new(ep: &Endpoint, creds: Rc<Credentials>) -> Result<Session> {
        Ok(Session {
            client: ep.client()?,
            basic: creds.basic(),
            creds,
            tokens: HashMap::new(),
            bearer: false,
            token_client: None,
        })
    }

    fn auth_for(&self, scope: Option<&str>) -> Option<String> {
        if self.bearer {
            let scope = scope?;
            let push = scope.replace(":pull", ":pull,push");
            // A push token covers pulls of the same repository.
            return self
                .tokens
                .get(scope)
                .or_else(|| self.tokens.get(&push))
                .cloned();
        }
        self.basic.clone()
    }

    /// Send a request, answering one authentication challenge. `body` makes
    /// the body (again, if the first attempt was refused).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: &dyn Fn() -> ReqBody,
    ) -> Result<Response<Incoming>> {
        let scope = scope_for(&method, path);
        let mut retried = false;
        loop {
            let auth = self.auth_for(scope.as_deref());
            let mut hs: Vec<(HeaderName, &str)> = headers.to_vec();
            if let Some(a) = &auth {
                hs.push((header::AUTHORIZATION, a.as_str()));
            }
            let resp = self.client.send(method.clone(), path, &hs, body()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            let Some(ch) = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
            else {
                return Ok(resp);
            };
            retried = true;
            match ch.scheme.as_str() {
                "bearer" => {
                    self.bearer = true;
                    let want = ch
                        .params
                        .get("scope")
                        .cloned()
                        .or_else(|| scope.clone())
                        .unwrap_or_default();
                    // Refused by the token endpoint (e.g. anonymous): the
                    // registry's 401 is the answer.
                    let Some(token) = self.fetch_token(&ch, &want).await? else {
                        return Ok(resp);
                    };
                    drain(resp, None).await?;
                    self.tokens
                        .insert(scope.clone().unwrap_or(want), format!("Bearer {token}"));
                }
                // Basic: credentials already went with the request, or there
                // are none; either way the 401 is the answer.
                _ => return Ok(resp),
            }
        }
    }

    /// GET the token endpoint (the challenge's realm, or `--token-url`);
    /// `None` when it refuses the credentials (401/403).
    async fn fetch_token(&mut self, ch: &Challenge, scope: &str) -> Result<Option<String>> {
        let realm = match &self.creds.token_url {
            Some(u) => u.clone(),
            None => ch
                .params
                .get("realm")
                .cloned()
                .ok_or_else(|| anyhow!("Bearer challenge without realm"))?,
        };
        let (authority, base) = split_http_url(&realm)?;
        let reuse = matches!(&self.token_client, Some((a, _)) if *a == authority);
        if !reuse {
            let (ep, _) = Endpoint::resolve(&realm).await?;
            self.token_client = Some((authority.clone(), ep.client()?));
        }
        let mut url = base;
        let enc = |s: &str| {
            s.replace('%', "%25")
                .replace(' ', "%20")
                .replace('&', "%26")
        };
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (k, v) in [
            ("service", ch.params.get("service").map(String::as_str)),
            ("scope", Some(scope)),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                url = format!("{url}{sep}{k}={}", enc(v));
                sep = '&';
            }
        }
        let basic = self.creds.basic();
        let mut hs: Vec<(HeaderName, &str)> = Vec::new();
        if let Some(b) = &basic {
            hs.push((header::AUTHORIZATION, b.as_str()));
        }
        let (_, c) = self.token_client.as_mut().expect("token client set above");
        let resp = c.send(Method::GET, &url, &hs, ReqBody::Empty).await?;
        let status = resp.status();
        let body = read_body(resp).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if status != StatusCode::OK {
            bail!("token endpoint answered {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body).context("token response")?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| Some(t.to_string()))
            .ok_or_else(|| anyhow!("token response has neither token nor access_token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/auth/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://127.0.0.1:1/auth/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="loadtest""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "loadtest");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn scopes() {
        assert_eq!(
            repository_of("/v2/ci/app-1/blobs/uploads/"),
            Some("ci/app-1")
        );
        assert_eq!(repository_of("/v2/a/manifests/v1"), Some("a"));
        // A repository may itself contain "blobs".
        assert_eq!(
            repository_of("/v2/x/blobs/y/blobs/sha256:0"),
            Some("x/blobs/y")
        );
        assert_eq!(repository_of("/v2/"), None);
        assert_eq!(
            scope_for(&Method::HEAD, "/v2/a/blobs/sha256:00").as_deref(),
            Some("repository:a:pull")
        );
        assert_eq!(
            scope_for(&Method::POST, "/v2/a/blobs/uploads/?mount=x&from=b").as_deref(),
            Some("repository:a:pull,push")
        );
    }

    #[test]
    fn urls() {
        let (a, p) = split_http_url("http://localhost:5000").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("localhost:5000", "/"));
        let (a, p) = split_http_url("http://reg.example/auth/token?x=1").unwrap();
        assert_eq!(
            (a.as_str(), p.as_str()),
            ("reg.example:80", "/auth/token?x=1")
        );
        assert!(split_http_url("https://reg.example").is_err());
        assert!(split_http_url("reg.example:5000").is_err());
    }
}
