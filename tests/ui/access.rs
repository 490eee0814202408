//! Who sees what in the UI: htpasswd logins (the session cookie, logout,
//! expiry, other replicas) and the token server's ACL (a user who may pull
//! one repository, anonymous rules, deletes refused and allowed).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{
    common::{files_under, htpasswd, http::block_on, Berth},
    fill::Registry,
    support::{KeyKind, Secrets},
    web::Web,
};

pub const SECRET: &str = "ui-test-secret";

pub fn htpasswd_config(root: &str, addr: &str, file: &str) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: {SECRET}\n\
         auth:\n  htpasswd:\n    realm: r\n    path: {file}\n"
    )
}

/// A session cookie as a replica holding `secret` would seal it.
pub fn forge(secret: &str, json: &str) -> String {
    use chacha20poly1305::{
        aead::{Aead, Payload},
        XChaCha20Poly1305, XNonce,
    };
    let mut derive = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    derive.update(b"berth ui seal key v1");
    let key = derive.finalize().into_bytes();
    let cipher = XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let nonce = [7u8; 24];
    let payload = Payload {
        msg: json.as_bytes(),
        aad: b"berth ui session v2",
    };
    let sealed = cipher.encrypt(&XNonce::from(nonce), payload).unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    format!("berth_ui={}", URL_SAFE_NO_PAD.encode(out))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An open Berth to fill, and `replicas` Berths with htpasswd (alice,
/// password `wonderland`) on its root; the temp dir holds the file.
pub fn htpasswd_registry(replicas: usize) -> (Berth, Vec<Berth>, tempfile::TempDir) {
    let open = Berth::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd::entry("alice", "wonderland", 4)).unwrap();
    let file = file.display().to_string();
    let with_auth = (0..replicas)
        .map(|_| {
            Berth::start_on_root_with(&open.root, |root, addr| htpasswd_config(root, addr, &file))
        })
        .collect();
    (open, with_auth, dir)
}

#[test]
fn htpasswd_login_logout_expiry_and_replicas() {
    let (open, replicas, _dir) = htpasswd_registry(2);
    let (b, replica) = (&replicas[0], &replicas[1]);
    block_on(async {
        Registry::new(&open.url("")).standard().await;
        let web = Web::new(&b.url(""));

        // Nothing without a login: to the form, and back here after.
        let r = web.get("/ui/r/apps/api").await;
        assert_eq!(r.status, 303);
        assert_eq!(
            r.header("location"),
            "/ui/login?next=%2Fui%2Fr%2Fapps%2Fapi"
        );
        assert_eq!(web.get("/ui/status").await.status, 303);

        let bad = web.login("/ui", "alice", "wrong").await;
        assert_eq!(bad.status, 401);
        assert!(bad.body.contains("invalid username or password"));
        assert!(
            !bad.header("set-cookie").contains("eyJhIjo"),
            "no session for a failure"
        );

        // A login form posted without the page's token is refused.
        let forged = web
            .post(
                "/ui/login",
                &[("username", "alice"), ("password", "wonderland")],
            )
            .await;
        assert_eq!(forged.status, 403);

        let ok = web.login("/ui", "alice", "wonderland").await;
        assert_eq!(ok.status, 303, "{}", ok.body);
        assert_eq!(ok.header("location"), "/ui/");
        let cookie = ok.header("set-cookie").to_string();
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/ui/", "Max-Age=3600"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        let list = web.get("/ui/").await;
        assert_eq!(list.status, 200);
        assert!(list.body.contains("<span id=\"account\">alice</span>"));
        assert_eq!(list.texts("repo-name"), ["apps/api", "apps/web"]);

        // Any replica with the same http.secret takes the cookie.
        let session = web.cookie.lock().unwrap().clone().unwrap();
        let other = Web::new(&replica.url(""));
        *other.cookie.lock().unwrap() = Some(session.clone());
        assert_eq!(other.get("/ui/").await.status, 200);

        // A cookie signed with another secret, or changed, is no login.
        let stranger = Web::new(&b.url(""));
        let json = format!(r#"{{"a":"alice","e":{},"n":"00"}}"#, now() + 600);
        *stranger.cookie.lock().unwrap() = Some(forge("another-secret", &json));
        assert_eq!(stranger.get("/ui/").await.status, 303);
        let mut changed = session.clone().into_bytes();
        let at = changed.len() - 5;
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        *stranger.cookie.lock().unwrap() = Some(String::from_utf8(changed).unwrap());
        assert_eq!(stranger.get("/ui/").await.status, 303);
        // One signed with ours is (the format is what replicas share).
        *stranger.cookie.lock().unwrap() = Some(forge(SECRET, &json));
        assert_eq!(stranger.get("/ui/").await.status, 200);

        // An expired session: back to the form, which says why.
        let old = format!(r#"{{"a":"alice","e":{},"n":"00"}}"#, now() - 1);
        *stranger.cookie.lock().unwrap() = Some(forge(SECRET, &old));
        let r = stranger.get("/ui/r/apps/api").await;
        assert_eq!(r.status, 303);
        assert!(
            r.header("location").ends_with("&expired=1"),
            "{}",
            r.header("location")
        );
        let form = stranger.get(r.header("location")).await;
        assert!(form.body.contains("Your session expired"));

        // A login form left open past its session: a fresh form, not a dead end.
        let late = Web::new(&b.url(""));
        let fields = [
            ("username", "alice"),
            ("password", "wonderland"),
            ("csrf", "old"),
        ];
        let again = late.post("/ui/login", &fields).await;
        assert_eq!(again.status, 403);
        assert!(again.body.contains("This form expired; log in again."));
        assert!(again.body.contains("id=\"login\""));
        // Logging out with no session left is no error.
        assert_eq!(
            Web::new(&b.url("")).post("/ui/logout", &[]).await.status,
            303
        );

        // Logging out needs the token too, then clears the cookie.
        let page = web.get("/ui/").await;
        assert_eq!(web.post("/ui/logout", &[]).await.status, 403);
        let out = web.post("/ui/logout", &[("csrf", &page.csrf())]).await;
        assert_eq!(out.status, 303);
        assert!(out.header("set-cookie").contains("Max-Age=0"));
        assert_eq!(web.get("/ui/").await.status, 303);
    });
}

const ACL: &str = r#"  acl:
    - match: {account: admin}
      actions: ["*"]
    - match: {account: alice, name: "team-a/*"}
      actions: [pull]
    - match: {account: alice}
      actions: []
    - match: {name: "public/*"}
      actions: [pull]
"#;

pub fn token_config(root: &str, addr: &str, s: &Secrets) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: {SECRET}\n\
         auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: ui-test\n    \
         issuer: berth-ui-test\n    rootcertbundle: {}\n{}",
        s.path("token.crt"),
        token_server_section(s),
    )
}

#[test]
fn the_token_servers_acl_decides_what_each_account_sees() {
    let open = Berth::start();
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "pw-a"), ("admin", "pw-admin")]);
    let b = Berth::start_on_root_with(&open.root, |root, addr| token_config(root, addr, &secrets));
    block_on(async {
        let fill = Registry::new(&open.url(""));
        fill.three_teams().await;

        // Anonymous: the anonymous rules (public/*), no login needed.
        let anon = Web::new(&b.url(""));
        let list = anon.get("/ui/").await;
        assert_eq!(list.status, 200);
        assert_eq!(list.texts("repo-name"), ["public/app"]);
        assert!(list.body.contains("id=\"login-link\""));
        assert_eq!(
            anon.get("/ui/status").await.status,
            303,
            "for accounts only"
        );

        // alice may pull team-a/* only: she sees that one repository.
        let alice = Web::new(&b.url(""));
        assert_eq!(alice.login("/ui", "alice", "pw-wrong").await.status, 401);
        assert_eq!(alice.login("/ui", "alice", "pw-a").await.status, 303);
        let list = alice.get("/ui/").await;
        assert_eq!(list.texts("repo-name"), ["team-a/app"]);
        assert_eq!(alice.get("/ui/?q=secret").await.texts("repo-name").len(), 0);
        // Another repository is not found (not "forbidden": not hers to know).
        assert_eq!(alice.get("/ui/r/other/secret").await.status, 404);
        assert_eq!(alice.get("/ui/r/other/secret/-/tag/v1").await.status, 404);
        // Hers, without delete: no delete links, the confirmation and the
        // post refused, storage untouched.
        let repo = alice.get("/ui/r/team-a/app").await;
        assert_eq!(repo.status, 200);
        assert!(!repo.body.contains("class=\"delete\""));
        assert_eq!(
            alice.get("/ui/r/team-a/app/-/delete?tag=v1").await.status,
            403
        );
        let before = files_under(&open.root);
        let refused = alice
            .post(
                "/ui/r/team-a/app/-/delete",
                &[("tag", "v1"), ("csrf", &repo.csrf())],
            )
            .await;
        assert_eq!(refused.status, 403);
        assert_eq!(files_under(&open.root), before);

        // admin may do anything: sees all three and deletes.
        let admin = Web::new(&b.url(""));
        assert_eq!(admin.login("/ui", "admin", "pw-admin").await.status, 303);
        let list = admin.get("/ui/").await;
        assert_eq!(
            list.texts("repo-name"),
            ["other/secret", "public/app", "team-a/app"]
        );
        let confirm = admin.get("/ui/r/team-a/app/-/delete?tag=v1").await;
        assert_eq!(confirm.status, 200);
        let done = admin
            .post(
                "/ui/r/team-a/app/-/delete",
                &[("tag", "v1"), ("csrf", &confirm.csrf())],
            )
            .await;
        assert_eq!(done.status, 303);
        let tags = admin.get("/ui/r/team-a/app").await;
        assert!(tags.body.contains("0 of 0 tags"), "{}", tags.body);
    });
}

/// `token_server:` with the test's key, users and [`ACL`], anonymous on.
fn token_server_section(s: &Secrets) -> String {
    format!(
        "token_server:\n  issuer: berth-ui-test\n  service: ui-test\n  signingkey: {key}\n  \
         certificate: {crt}\n  htpasswd: {users}\n  anonymous: true\n{ACL}",
        crt = s.path("token.crt"),
        key = s.path("token.key"),
        users = s.path("htpasswd"),
    )
}

/// A Berth that only runs the token server (its own root, no registry auth).
fn token_server_only(root: &str, addr: &str, s: &Secrets) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {addr}\n  secret: other-secret\n{}",
        token_server_section(s),
    )
}

#[test]
fn an_outside_token_server_decides_through_its_tokens() {
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "pw-a"), ("admin", "pw-admin")]);
    let mut realm = Berth::start_with(|root, addr| token_server_only(root, addr, &secrets));
    let open = Berth::start();
    let realm_url = realm.url("/auth/token");
    let b = Berth::start_on_root_with(&open.root, |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: {SECRET}\n\
             auth:\n  token:\n    realm: {realm_url}\n    service: ui-test\n    \
             issuer: berth-ui-test\n    rootcertbundle: {}\n",
            secrets.path("token.crt")
        )
    });
    block_on(async {
        let fill = Registry::new(&open.url(""));
        fill.three_teams().await;
        let anon = Web::new(&b.url(""));
        assert_eq!(anon.get("/ui/").await.texts("repo-name"), ["public/app"]);

        let alice = Web::new(&b.url(""));
        assert_eq!(alice.login("/ui", "alice", "nope").await.status, 401);
        assert_eq!(alice.login("/ui", "alice", "pw-a").await.status, 303);
        assert_eq!(alice.get("/ui/").await.texts("repo-name"), ["team-a/app"]);
        assert_eq!(alice.get("/ui/r/other/secret").await.status, 404);
        let repo = alice.get("/ui/r/team-a/app").await;
        assert_eq!(repo.status, 200);
        assert!(!repo.body.contains("class=\"delete\""));

        let admin = Web::new(&b.url(""));
        assert_eq!(admin.login("/ui", "admin", "pw-admin").await.status, 303);
        let all = admin.get("/ui/").await.texts("repo-name");
        assert_eq!(all, ["other/secret", "public/app", "team-a/app"]);
        let confirm = admin.get("/ui/r/public/app/-/delete?tag=v1").await;
        let fields = [("tag", "v1"), ("csrf", &confirm.csrf())];
        assert_eq!(
            admin
                .post("/ui/r/public/app/-/delete", &fields)
                .await
                .status,
            303
        );
        let api = crate::common::http::get(open.url("/v2/public/app/manifests/v1"))
            .await
            .unwrap();
        assert_eq!(api.status(), 404);

        // The realm's throttle is not the only one: the UI counts failed
        // logins per client before it asks.
        let guesser = Web::new(&b.url(""));
        let mut statuses = vec![];
        for _ in 0..7 {
            statuses.push(guesser.login("/ui", "alice", "guess").await.status);
        }
        // alice's "nope" above was this address's first failure.
        assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429]);

        // A password change revokes the realm's refresh tokens: alice's
        // next page sends her to the login form.
        let hash = crate::support::bcrypt_hash("pw-a-new");
        let admin_line = std::fs::read_to_string(secrets.path("htpasswd"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("admin:"))
            .unwrap()
            .to_string();
        std::fs::write(
            secrets.path("htpasswd"),
            format!("alice:{hash}\n{admin_line}\n"),
        )
        .unwrap();
        let mut lapsed = 0;
        for _ in 0..50 {
            let r = alice.get("/ui/").await;
            if r.status == 303 {
                assert!(r.header("location").ends_with("&expired=1"));
                lapsed += 1;
                break;
            }
            // The realm notices the file change on its next read.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(lapsed, 1, "alice's session lapsed with her refresh token");

        // The token server gone: no page shows anything, retryably.
        realm.terminate(std::time::Duration::from_secs(10));
        let down = admin.get("/ui/").await;
        assert_eq!(down.status, 503, "{}", down.body);
        assert_eq!(down.header("retry-after"), "5");
        assert!(!down.body.contains("repo-name"));
    });
}

#[test]
fn an_outside_autoredirect_realm_needs_http_host() {
    let yaml = "storage:\n  inmemory: {}\nauth:\n  token:\n    realm: r\n    service: s\n    \
                issuer: i\n    jwks: /nonexistent\n    autoredirect: true\n";
    let (code, stderr) = crate::common::config_check(yaml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("needs http.host"), "{stderr}");
    let (_, stderr) = crate::common::config_check(yaml, &[("REGISTRY_UI_ENABLED", "false")]);
    assert!(!stderr.contains("needs http.host"), "{stderr}");
}
