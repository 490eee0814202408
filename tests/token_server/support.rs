//! What the token server tests share: signing keys from the `openssl` CLI,
//! bcrypt users, the example configs under tests/fixtures/token-server with
//! their paths pointed at a temp dir, a small HTTP client, and docker's
//! challenge → token → retry dance.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

pub use crate::common::http::{sha256, Resp};
use crate::common::{http::exchange, process::openssl, Berth};

/// The service and issuer every fixture uses.
pub const SERVICE: &str = "registry.example.com";
pub const ISSUER: &str = "berth-token-server";

pub enum KeyKind {
    /// RSA 2048 in PKCS#1 (`RSA PRIVATE KEY`).
    Rsa,
    /// EC P-256 as `openssl ecparam -genkey` writes it (EC PARAMETERS + SEC1).
    EcP256,
}

/// A signing key, its self-signed certificate and an htpasswd file, named
/// as the fixtures expect them (`token.key`, `token.crt`, `htpasswd`).
pub struct Secrets {
    pub dir: tempfile::TempDir,
}

impl Secrets {
    /// `users`: (name, password); bcrypt cost 4 keeps the tests quick.
    pub fn new(kind: KeyKind, users: &[(&str, &str)]) -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets { dir };
        let key = s.path("token.key");
        match kind {
            KeyKind::Rsa => openssl(&["genrsa", "-traditional", "-out", &key, "2048"]),
            KeyKind::EcP256 => {
                openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", &key])
            }
        }
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=berth-token",
            "-days",
            "30",
            "-out",
            &s.path("token.crt"),
        ]);
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{}\n", bcrypt_hash(p)))
            .collect();
        std::fs::write(s.path("htpasswd"), lines).unwrap();
        s
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The certificate's public key, DER (SubjectPublicKeyInfo), via openssl.
    pub fn spki_der(&self) -> Vec<u8> {
        let out = self.path("pub.der");
        openssl(&[
            "x509",
            "-in",
            &self.path("token.crt"),
            "-pubkey",
            "-noout",
            "-out",
            &self.path("pub.pem"),
        ]);
        openssl(&[
            "pkey",
            "-pubin",
            "-in",
            &self.path("pub.pem"),
            "-outform",
            "DER",
            "-out",
            &out,
        ]);
        std::fs::read(out).unwrap()
    }
}

pub fn bcrypt_hash(password: &str) -> String {
    crate::common::htpasswd::bcrypt_hash(password, 4)
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/token-server")
        .join(name)
}

/// A fixture as written, its example paths and addresses pointed at this
/// test's: the config README readers copy is the config the tests run.
pub fn fixture(name: &str, secrets: &Secrets, root: &str, addr: &str) -> String {
    std::fs::read_to_string(fixture_path(name))
        .unwrap()
        .replace("/var/lib/berth", root)
        .replace("addr: :5000", &format!("addr: {addr}"))
        .replace("https://registry.example.com", &format!("http://{addr}"))
        .replace("/etc/berth/", &format!("{}/", secrets.dir.path().display()))
}

/// Start Berth on a fixture, with `extra` appended under `token_server:`
/// (indented by the caller, e.g. "  throttle:\n    maxfailures: 3\n").
pub fn start_fixture(name: &str, secrets: &Secrets, extra: &str) -> Berth {
    Berth::start_with(|root, addr| {
        let cfg = fixture(name, secrets, root, addr);
        // `extra` lands in the last top-level section, which must be ours.
        let last_section = cfg
            .lines()
            .rfind(|l| !l.is_empty() && !l.starts_with([' ', '#']));
        assert_eq!(last_section, Some("token_server:"), "{name}");
        format!("{}\n{extra}", cfg.trim_end())
    })
}

pub fn token_url(b: &Berth) -> String {
    b.url("/auth/token")
}

pub enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// One request; a connection error fails the test.
pub fn send(method: &str, url: &str, auth: Auth, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let client = crate::common::http::builder().timeout(Duration::from_secs(60));
    exchange(client, |c| {
        let mut req = c.request(method.parse().unwrap(), url).body(body);
        req = match auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    })
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// A GET from another loopback address (the throttle counts per client).
pub fn send_from(local: &str, url: &str, auth: Auth) -> Resp {
    let client = crate::common::http::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(60));
    exchange(client, |c| match auth {
        Auth::Basic(u, p) => c.get(url).basic_auth(u, Some(p)),
        _ => c.get(url),
    })
    .unwrap_or_else(|e| panic!("GET {url} from {local}: {e}"))
}

pub fn get(url: &str, auth: Auth) -> Resp {
    send("GET", url, auth, &[], vec![])
}

/// `Bearer realm="…",service="…",scope="a b"` → its parameters. Values are
/// quoted and may hold commas (`pull,push`), so this reads quote-aware.
pub fn challenge(header: &str) -> BTreeMap<String, String> {
    let rest = header
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {header}"));
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "unquoted value in {header}");
        let value: String = chars.by_ref().take_while(|c| *c != '"').collect();
        out.insert(key.trim().to_string(), value);
        if chars.next() != Some(',') {
            break;
        }
    }
    out
}

/// GET the token endpoint with these query parameters.
pub fn fetch_token(b: &Berth, query: &[(&str, &str)], auth: Auth) -> Resp {
    let url = reqwest::Url::parse_with_params(&token_url(b), query).unwrap();
    get(url.as_str(), auth)
}

/// A token for `scope` as docker gets it; panics unless 200.
pub fn token(b: &Berth, scope: &str, auth: Auth) -> String {
    let r = fetch_token(b, &[("service", SERVICE), ("scope", scope)], auth);
    assert_eq!(r.status, 200, "token for {scope}: {}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

/// A JWT's header and claims, unverified (the server under test verifies).
pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = token.split('.');
    let mut part = || {
        let raw = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()
    };
    (part(), part())
}

/// The `access` entry of `claims` for a repository.
pub fn granted(claims: &serde_json::Value, name: &str) -> Vec<String> {
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no access entry for {name}: {claims}"))["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The actions (sorted) a token issued to `user` with `password` grants on
/// `repo` when pull and push are asked for, or the token server's refusal
/// status.
pub fn granted_with(b: &Berth, user: &str, password: &str, repo: &str) -> Result<Vec<String>, u16> {
    let r = fetch_token(
        b,
        &[
            ("service", SERVICE),
            ("scope", &format!("repository:{repo}:pull,push")),
        ],
        Auth::Basic(user, password),
    );
    if r.status != 200 {
        return Err(r.status);
    }
    let token = r.json()["token"].as_str().unwrap().to_string();
    let mut actions = granted(&jwt_parts(&token).1, repo);
    actions.sort();
    Ok(actions)
}

/// docker's dance for one request: try; on a Bearer challenge fetch a token
/// from its realm for its service and scope with `creds`; retry with it.
pub fn with_token(
    method: &str,
    url: &str,
    creds: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let first = send(method, url, Auth::None, headers, body.clone());
    if first.status != 401 {
        return first;
    }
    let c = challenge(
        first
            .header("www-authenticate")
            .expect("401 without a challenge"),
    );
    let mut query = vec![("service", c["service"].as_str())];
    if let Some(scope) = c.get("scope") {
        query.extend(scope.split(' ').map(|s| ("scope", s)));
    }
    let token_url = reqwest::Url::parse_with_params(&c["realm"], &query).unwrap();
    let auth = match creds {
        Some((u, p)) => Auth::Basic(u, p),
        None => Auth::None,
    };
    let t = get(token_url.as_str(), auth);
    if t.status != 200 {
        return t; // the token server's refusal is the answer
    }
    let token = t.json()["token"].as_str().unwrap().to_string();
    send(method, url, Auth::Bearer(&token), headers, body)
}

/// Push a one-layer image `repo:tag` to the registry at `base` (e.g.
/// `http://127.0.0.1:5000`), each request through [`with_token`]. Returns
/// the first failing response, or the manifest PUT's.
pub fn push_image(base: &str, repo: &str, tag: &str, creds: Option<(&str, &str)>) -> Resp {
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    for blob in [&layer, &config] {
        let start = with_token(
            "POST",
            &format!("{base}/v2/{repo}/blobs/uploads/"),
            creds,
            &[],
            vec![],
        );
        if start.status != 202 {
            return start;
        }
        let loc = start.header("location").unwrap();
        let loc = if loc.starts_with('/') {
            format!("{base}{loc}")
        } else {
            loc.to_string()
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = with_token(
            "PUT",
            &format!("{loc}{sep}digest={}", sha256(blob)),
            creds,
            &[("content-type", "application/octet-stream")],
            blob.to_vec(),
        );
        if put.status != 201 {
            return put;
        }
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    with_token(
        "PUT",
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        creds,
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        manifest,
    )
}

/// GET a manifest through the dance.
pub fn pull_manifest(base: &str, repo: &str, tag: &str, creds: Option<(&str, &str)>) -> Resp {
    with_token(
        "GET",
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        creds,
        &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        vec![],
    )
}

/// Every file under `root`, relative: to show a denied push stored nothing.
pub fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
