//! The UI in a real browser: Debian's Chromium, headless, with no network
//! but loopback. Pages are checked by their DOM and rendered text, XSS
//! attempts must stay text, and each main page is saved as a screenshot
//! (`BERTH_TEST_ARTIFACTS`, else `<target>/ui-screenshots/`; the README's
//! come from there).

use crate::{
    access::{forge, htpasswd_registry, now, token_config, SECRET},
    browser::Browser,
    common::{http::block_on, Berth},
    fill::{Registry, SIGNATURE_TYPE, XSS_ANNOTATION, XSS_LABEL},
    support::{KeyKind, Secrets},
};

#[test]
fn browsing_a_registry_of_two_thousand_repositories() {
    let b = Berth::start();
    block_on(async {
        let fill = Registry::new(&b.url(""));
        let made = fill.standard().await;
        fill.many("team", 2000).await;
        let web = Browser::start().await;

        web.goto(&b.url("/ui/")).await;
        assert_eq!(web.count("a.repo-name").await, 50);
        assert_eq!(web.text("a.repo-name").await, "apps/api");
        assert_eq!(web.text("#repositories tr.repo td.tag-count").await, "1");
        web.screenshot("repositories").await;

        // Paging goes on from the page's last repository.
        web.click("#next").await;
        assert!(web.current_path().await.contains("after="));
        assert_eq!(web.text("a.repo-name").await, "team/repo-0048");

        // The search box.
        web.fill("input[name=q]", "repo-199").await;
        web.click("form.search button").await;
        let found = web.texts("a.repo-name").await;
        let want: Vec<String> = (1990..2000).map(|i| format!("team/repo-{i}")).collect();
        assert_eq!(found, want);

        // A repository, then its index tag by clicking through.
        web.goto(&b.url("/ui/r/apps/web")).await;
        assert_eq!(
            web.texts("td.tag-name").await,
            ["1.0", "web-amd64", "web-arm64"]
        );
        assert_eq!(web.text("td.platforms").await, "linux/amd64, linux/arm64");
        web.screenshot("repository").await;
        web.click("td.tag-name a").await;
        assert_eq!(web.current_path().await, "/ui/r/apps/web/-/tag/1.0");
        assert_eq!(
            web.texts("td.platform-name").await,
            ["linux/amd64", "linux/arm64"]
        );
        assert!(web
            .text("#pull-line")
            .await
            .ends_with(&format!("apps/web@{}", made.index_digest)));
        web.screenshot("index").await;

        // The image: config, layers, referrers; the XSS attempts are text.
        web.goto(&b.url("/ui/r/apps/api/-/tag/v1")).await;
        assert_eq!(
            web.text("#entrypoint").await,
            r#"["/usr/bin/api","--serve"]"#
        );
        assert_eq!(web.text("#env").await, "PATH, API_TOKEN");
        assert_eq!(web.count("tr.layer").await, 1);
        assert_eq!(web.count("tr.referrer").await, 2);
        let labels = web.text("#labels").await;
        assert!(labels.contains(XSS_LABEL), "shown as text: {labels}");
        let annotations = web.text("#annotations").await;
        assert!(annotations.contains(XSS_ANNOTATION.trim()), "{annotations}");
        assert_eq!(web.count("#labels script, #annotations img").await, 0);
        assert!(!web.xss_fired().await, "a planted script ran");
        web.screenshot("image").await;

        // A referrer's own page, by its link.
        let sig = format!("a[href$='{}']", made.signature_digest.replace(':', "%3A"));
        web.click(&sig).await;
        assert_eq!(web.text("#artifact-type").await, SIGNATURE_TYPE);
        assert_eq!(web.text("#subject").await, made.image_digest);

        web.goto(&b.url("/ui/status")).await;
        assert_eq!(web.text("#driver").await, "filesystem");
        assert_eq!(web.text("#storage-health").await, "ok");
        web.screenshot("status").await;
        assert!(!web.xss_fired().await);
        web.close().await;
    });
}

#[test]
fn login_logout_and_an_expired_session_in_the_browser() {
    let (open, replicas, _dir) = htpasswd_registry(1);
    let b = &replicas[0];
    block_on(async {
        Registry::new(&open.url("")).standard().await;
        let web = Browser::start().await;
        web.goto(&b.url("/ui/r/apps/api")).await;
        assert!(web.current_path().await.starts_with("/ui/login?next="));
        web.screenshot("login").await;

        web.fill("input[name=username]", "alice").await;
        web.fill("input[name=password]", "not-it").await;
        web.click("#login button[type=submit]").await;
        assert_eq!(
            web.text("#login-error").await,
            "invalid username or password"
        );

        web.fill("input[name=password]", "wonderland").await;
        web.click("#login button[type=submit]").await;
        assert_eq!(
            web.current_path().await,
            "/ui/r/apps/api",
            "back where the login began"
        );
        assert_eq!(web.text("#account").await, "alice");
        let cookie = web.cookie("berth_ui").await.expect("a session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        // No script of the page can read it.
        assert_eq!(web.eval("return document.cookie").await, "");

        web.click("#logout button").await;
        assert!(web.current_path().await.starts_with("/ui/login"));
        web.goto(&b.url("/ui/")).await;
        assert!(
            web.current_path().await.starts_with("/ui/login"),
            "logged out"
        );

        // A session past its expiry: the form says so.
        let expired = forge(
            SECRET,
            &format!(r#"{{"a":"alice","e":{},"n":"00"}}"#, now() - 5),
        );
        let value = expired.trim_start_matches("berth_ui=");
        web.delete_cookies().await;
        web.set_cookie_value("berth_ui", value).await;
        web.goto(&b.url("/ui/r/apps/web")).await;
        assert!(web.current_path().await.ends_with("&expired=1"));
        assert_eq!(
            web.text(".notice").await,
            "Your session expired; log in again."
        );
        web.close().await;
    });
}

#[test]
fn each_account_sees_what_it_may_pull_and_deletes_only_with_delete() {
    let open = Berth::start();
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "pw-a"), ("admin", "pw-admin")]);
    let b = Berth::start_on_root_with(&open.root, |root, addr| token_config(root, addr, &secrets));
    block_on(async {
        let fill = Registry::new(&open.url(""));
        fill.three_teams().await;
        fill.many("bulk", 40).await;
        let web = Browser::start().await;
        let login = |user: &'static str, password: &'static str| {
            let web = &web;
            let url = b.url("/ui/login");
            async move {
                web.goto(&url).await;
                web.fill("input[name=username]", user).await;
                web.fill("input[name=password]", password).await;
                web.click("#login button[type=submit]").await;
            }
        };

        // alice may pull one repository of 44: she sees that one.
        login("alice", "pw-a").await;
        assert_eq!(web.texts("a.repo-name").await, ["team-a/app"]);
        web.goto(&b.url("/ui/r/team-a/app")).await;
        assert_eq!(web.count("a.delete").await, 0);
        web.goto(&b.url("/ui/r/team-a/app/-/delete?tag=v1")).await;
        assert_eq!(web.text("#error-status").await, "403");
        web.goto(&b.url("/ui/r/other/secret")).await;
        assert_eq!(web.text("#error-status").await, "404");
        web.click("#logout button").await;

        // admin may delete: through the confirmation page.
        login("admin", "pw-admin").await;
        assert_eq!(web.count("a.repo-name").await, 44);
        web.goto(&b.url("/ui/r/team-a/app")).await;
        web.click("a.delete").await;
        assert!(web.text("#confirm-text").await.contains("team-a/app"));
        web.click("#confirm-delete button[type=submit]").await;
        assert_eq!(web.current_path().await, "/ui/r/team-a/app");
        assert_eq!(web.text("#tag-count").await, "0 of 0 tags");
        web.close().await;
    });
}
