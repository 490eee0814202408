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

/// A session cookie as a replica holding `secret` would sign it.
pub fn forge(secret: &str, json: &str) -> String {
    let mut derive = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    derive.update(b"berth ui session v1");
    let key = derive.finalize().into_bytes();
    let body = URL_SAFE_NO_PAD.encode(json);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("berth_ui={body}.{sig}")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn htpasswd_login_logout_expiry_and_replicas() {
    let open = Berth::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd::entry("alice", "wonderland", 4)).unwrap();
    let file = file.display().to_string();
    let b = Berth::start_on_root_with(&open.root, |root, addr| htpasswd_config(root, addr, &file));
    let replica =
        Berth::start_on_root_with(&open.root, |root, addr| htpasswd_config(root, addr, &file));
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
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age=3600"] {
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
        *stranger.cookie.lock().unwrap() = Some(session.replacen("berth_ui=ey", "berth_ui=ez", 1));
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
         issuer: berth-ui-test\n    rootcertbundle: {crt}\n\
         token_server:\n  issuer: berth-ui-test\n  service: ui-test\n  signingkey: {key}\n  \
         certificate: {crt}\n  htpasswd: {users}\n  anonymous: true\n{ACL}",
        crt = s.path("token.crt"),
        key = s.path("token.key"),
        users = s.path("htpasswd"),
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

/// A Berth that only runs the token server (its own root, no registry auth).
fn token_server_only(root: &str, addr: &str, s: &Secrets) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {addr}\n  secret: other-secret\n\
         token_server:\n  issuer: berth-ui-test\n  service: ui-test\n  signingkey: {key}\n  \
         certificate: {crt}\n  htpasswd: {users}\n  anonymous: true\n{ACL}",
        crt = s.path("token.crt"),
        key = s.path("token.key"),
        users = s.path("htpasswd"),
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

        // The token server gone: no page shows anything, retryably.
        realm.terminate(std::time::Duration::from_secs(10));
        let down = admin.get("/ui/").await;
        assert_eq!(down.status, 503, "{}", down.body);
        assert_eq!(down.header("retry-after"), "5");
        assert!(!down.body.contains("repo-name"));
    });
}
