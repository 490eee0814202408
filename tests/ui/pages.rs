//! The UI's pages over HTTP, on a registry without access control: what
//! they show, how they page and filter, the headers that keep them inert,
//! and the paths they refuse.

use crate::{
    common::{http::block_on, Berth},
    fill::{self, Registry, SBOM_TYPE, SIGNATURE_TYPE, XSS_ANNOTATION, XSS_LABEL},
    web::Web,
};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[test]
fn pages_show_images_indexes_and_referrers_escaped() {
    let b = Berth::start();
    block_on(async {
        let made = Registry::new(&b.url("")).standard().await;
        let web = Web::new(&b.url(""));

        let list = web.get("/ui/").await;
        assert_eq!(list.status, 200);
        assert_eq!(list.header("content-security-policy"), CSP);
        assert_eq!(list.header("x-frame-options"), "DENY");
        assert_eq!(list.header("cache-control"), "no-store");
        let cookie = list.header("set-cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        assert_eq!(list.texts("repo-name"), ["apps/api", "apps/web"]);
        assert_eq!(list.texts("num tag-count"), ["1", "3"]);

        // The index's tag: its platforms and total size (both images).
        let repo = web.get("/ui/r/apps/web").await;
        assert_eq!(repo.texts("tag-name"), ["1.0", "web-amd64", "web-arm64"]);
        assert_eq!(repo.texts("platforms")[0], "linux/amd64, linux/arm64");
        assert_eq!(repo.texts("media-type")[0], "index");
        let sizes = repo.texts("num size");
        let kb = |s: &str| s.trim_end_matches(" kB").parse::<f64>().unwrap();
        assert!(
            (kb(&sizes[0]) - kb(&sizes[1]) - kb(&sizes[2])).abs() < 0.2,
            "{sizes:?}"
        );
        assert!(repo.body.contains("docker pull 127.0.0.1:"), "pull line");

        let index = web.get("/ui/r/apps/web/-/tag/1.0").await;
        assert_eq!(index.status, 200);
        assert_eq!(index.texts("platform-name"), ["linux/amd64", "linux/arm64"]);
        assert!(index.body.contains(&made.index_digest));

        // The image: config, layers, referrers by type, each linking to its page.
        let image = web.get("/ui/r/apps/api/-/tag/v1").await;
        assert_eq!(image.status, 200);
        assert!(image.body.contains(r#"<dd id="platform">linux/amd64</dd>"#));
        assert!(
            image.body.contains("<dd id=\"env\">PATH, API_TOKEN</dd>"),
            "env names only"
        );
        assert!(image
            .body
            .contains(r#"id="entrypoint">[&#34;/usr/bin/api&#34;,&#34;--serve&#34;]"#));
        assert_eq!(image.texts("artifact-type"), [SBOM_TYPE, SIGNATURE_TYPE]);
        for d in [&made.signature_digest, &made.sbom_digest] {
            assert!(image.body.contains(&format!(
                "/ui/r/apps/api/-/manifest/{}",
                d.replace(':', "%3A")
            )));
        }
        assert_eq!(image.body.matches("<tr class=\"layer\">").count(), 1);
        // Attacker-controlled text is shown, escaped, and never as markup.
        for raw in [XSS_LABEL, XSS_ANNOTATION, "<img src=x"] {
            assert!(!image.body.contains(raw), "{raw} unescaped");
        }
        assert!(image
            .body
            .contains("&#60;script&#62;window.__xss=1&#60;/script&#62;"));

        // A signature's own page names its subject.
        let sig = web
            .get(&format!(
                "/ui/r/apps/api/-/manifest/{}",
                made.signature_digest
            ))
            .await;
        assert_eq!(sig.status, 200);
        assert!(sig.body.contains(&format!(
            "id=\"subject\" href=\"/ui/r/apps/api/-/manifest/{}",
            made.image_digest.replace(':', "%3A")
        )));
        assert!(sig
            .body
            .contains(&format!("<dd id=\"artifact-type\">{SIGNATURE_TYPE}</dd>")));

        let status = web.get("/ui/status").await;
        assert_eq!(status.status, 200);
        assert!(status.body.contains("<dd id=\"driver\">filesystem</dd>"));
        assert!(status.body.contains("id=\"storage-health\" class=\"ok\""));

        let css = web.get("/ui/static/ui.css").await;
        assert_eq!(css.status, 200);
        assert!(css.header("content-type").starts_with("text/css"));
    });
}

#[test]
fn repository_list_pages_and_searches() {
    let b = Berth::start();
    block_on(async {
        Registry::new(&b.url("")).many("many", 120).await;
        let web = Web::new(&b.url(""));
        let mut seen = vec![];
        let mut path = "/ui/?n=50".to_string();
        let next = regex::Regex::new(r#"id="next" href="([^"]+)""#).unwrap();
        for _ in 0..10 {
            let page = web.get(&path).await;
            assert_eq!(page.status, 200);
            let names = page.texts("repo-name");
            assert!(names.len() <= 50);
            seen.extend(names);
            match next.captures(&page.body) {
                Some(c) => path = c[1].replace("&amp;", "&"),
                None => break,
            }
        }
        let mut want: Vec<String> = (0..120).map(|i| format!("many/repo-{i:04}")).collect();
        want.push("many/repo-seed".into());
        assert_eq!(seen, want, "every repository once, in order");

        let found = web.get("/ui/?q=repo-011").await;
        let want: Vec<String> = (110..120).map(|i| format!("many/repo-{i:04}")).collect();
        assert_eq!(found.texts("repo-name"), want);
        let none = web.get("/ui/?q=nothing-like-this").await;
        assert!(none.body.contains("id=\"empty\""));
    });
}

#[test]
fn tags_filter_sort_and_page() {
    let b = Berth::start();
    block_on(async {
        Registry::new(&b.url("")).tags("lots", 150).await;
        let web = Web::new(&b.url(""));
        let first = web.get("/ui/r/lots").await;
        assert_eq!(first.texts("tag-name").len(), 100);
        assert!(first.body.contains("150 of 150 tags"));
        let second = web.get("/ui/r/lots?page=2").await;
        assert_eq!(second.texts("tag-name").len(), 50);
        assert_eq!(second.texts("tag-name")[0], "t-0100");
        let filtered = web.get("/ui/r/lots?q=t-014").await;
        assert_eq!(filtered.texts("tag-name").len(), 10);
        assert!(filtered.body.contains("10 of 150 tags"));
        let desc = web.get("/ui/r/lots?sort=-name").await;
        assert_eq!(desc.texts("tag-name")[0], "t-0149");
        let newest = web.get("/ui/r/lots?sort=pushed").await;
        assert_eq!(newest.texts("tag-name").len(), 100);
        assert!(newest.body.contains("<option value=\"pushed\" selected>"));
    });
}

#[test]
fn deletes_need_the_pages_form_token() {
    let b = Berth::start();
    block_on(async {
        let made = Registry::new(&b.url("")).standard().await;
        let web = Web::new(&b.url(""));
        let confirm = web.get("/ui/r/apps/web/-/delete?tag=web-arm64").await;
        assert_eq!(confirm.status, 200);
        assert!(confirm.body.contains("id=\"confirm-delete\""));
        let csrf = confirm.csrf();
        let before = crate::common::files_under(&b.root);

        let path = "/ui/r/apps/web/-/delete";
        let no_token = web.post(path, &[("tag", "web-arm64")]).await;
        assert_eq!(no_token.status, 403);
        let wrong = web
            .post(path, &[("tag", "web-arm64"), ("csrf", "forged")])
            .await;
        assert_eq!(wrong.status, 403);
        let fields = [("tag", "web-arm64"), ("csrf", csrf.as_str())];
        let elsewhere = web.post_from(path, &fields, Some("cross-site")).await;
        assert_eq!(elsewhere.status, 403);
        // Another browser (no session) with a token it copied: refused too.
        let stranger = Web::new(&b.url(""));
        assert_eq!(stranger.post(path, &fields).await.status, 403);
        assert_eq!(
            crate::common::files_under(&b.root),
            before,
            "storage unchanged"
        );

        let done = web.post_from(path, &fields, Some("same-origin")).await;
        assert_eq!(done.status, 303, "{}", done.body);
        assert_eq!(done.header("location"), "/ui/r/apps/web");
        let api = crate::common::http::get(b.url("/v2/apps/web/manifests/web-arm64"))
            .await
            .unwrap();
        assert_eq!(api.status(), 404);

        // A manifest by digest: its tags go with it.
        let digest = made.index_digest.as_str();
        let fields = [("digest", digest), ("csrf", csrf.as_str())];
        assert_eq!(web.post(path, &fields).await.status, 303);
        let api = crate::common::http::get(b.url("/v2/apps/web/manifests/1.0"))
            .await
            .unwrap();
        assert_eq!(api.status(), 404);
        let gone = web
            .get(&format!("/ui/r/apps/web/-/manifest/{digest}"))
            .await;
        assert_eq!(gone.status, 404);
    });
}

#[test]
fn without_storage_delete_there_is_nothing_to_delete() {
    let b = Berth::start_with(|root, addr| {
        format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n")
    });
    block_on(async {
        Registry::new(&b.url("")).standard().await;
        let web = Web::new(&b.url(""));
        let repo = web.get("/ui/r/apps/web").await;
        assert!(!repo.body.contains("class=\"delete\""));
        let confirm = web.get("/ui/r/apps/web/-/delete?tag=1.0").await;
        assert_eq!(confirm.status, 403);
        let r = web.post("/ui/r/apps/web/-/delete", &[("tag", "1.0")]).await;
        assert_eq!(r.status, 403);
        let api = crate::common::http::get(b.url("/v2/apps/web/manifests/1.0"))
            .await
            .unwrap();
        assert_eq!(api.status(), 200);
        let status = web.get("/ui/status").await;
        assert!(status
            .body
            .contains("off (storage.delete.enabled is false)"));
    });
}

#[test]
fn odd_paths_are_not_found() {
    let b = Berth::start();
    block_on(async {
        Registry::new(&b.url("")).standard().await;
        let web = Web::new(&b.url(""));
        for path in [
            "/ui/r/Upper/Case",
            "/ui/r/apps/api/-/manifest/sha256:zz",
            "/ui/r/apps/api/-/tag/bad%20tag",
            "/ui/r/apps/api/-/nothing",
            "/ui/r/no/such/repo",
            "/ui/r/apps/api/-/tag/missing",
            "/ui/static/other.js",
        ] {
            let page = web.get(path).await;
            assert_eq!(page.status, 404, "{path}");
        }
        let r = web.get("/ui").await;
        assert_eq!(r.status, 308);
        // A cursor that was not sealed here is no cursor: the first page.
        let forged = web.get("/ui/?after=bm90LWEtY3Vyc29y").await;
        assert_eq!(forged.texts("repo-name"), ["apps/api", "apps/web"]);
        // A form body past 16 KiB is refused before it is read whole.
        let big = "x".repeat(20 * 1024);
        let r = web.post("/ui/login", &[("username", big.as_str())]).await;
        assert_eq!(r.status, 413);
        // Control characters in the search box come back as text.
        let odd = web.get("/ui/?q=%0D%0A%3Cb%3E").await;
        assert_eq!(odd.status, 200);
        assert!(!odd.body.contains("<b>"));
    });
}

#[test]
fn the_ui_can_be_turned_off_and_lives_under_the_prefix() {
    let off = Berth::start_with_env(
        |root, addr| {
            format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n")
        },
        &[("REGISTRY_UI_ENABLED", "false")],
    );
    let prefixed = Berth::start_with(|root, addr| {
        format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  prefix: /registry/\n")
    });
    block_on(async {
        let web = Web::new(&off.url(""));
        assert_eq!(web.get("/ui/").await.status, 404);
        assert_eq!(web.get("/v2/").await.status, 200);

        fill::Registry::new(&prefixed.url("/registry"))
            .standard()
            .await;
        let web = Web::new(&prefixed.url(""));
        assert_eq!(web.get("/ui/").await.status, 404);
        let list = web.get("/registry/ui/").await;
        assert_eq!(list.status, 200);
        assert!(list.header("set-cookie").contains("Path=/registry/ui/"));
        assert!(list.body.contains("href=\"/registry/ui/r/apps/api\""));
        assert!(list.body.contains("href=\"/registry/ui/static/ui.css\""));
    });
}

#[test]
fn the_scan_limit_bounds_searches_and_time_sorts() {
    let b = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             ui:\n  scanlimit: 60\n  sortlimit: 50\n"
        )
    });
    block_on(async {
        Registry::new(&b.url("")).many("many", 120).await;
        let web = Web::new(&b.url(""));
        let first = web.get("/ui/?q=repo-011").await;
        assert!(first.texts("repo-name").is_empty(), "none in the first 60");
        assert!(first.body.contains("Searched 60 repositories so far."));
        let next = regex::Regex::new(r#"id="next" href="([^"]+)""#).unwrap();
        let link = next.captures(&first.body).expect("a next link")[1].replace("&amp;", "&");
        // Where the scan stopped is sealed: it may be a name the viewer
        // may not see.
        assert!(
            link.contains("after=") && !link.contains("repo-0059"),
            "{link}"
        );
        let second = web.get(&link).await;
        let want: Vec<String> = (110..120).map(|i| format!("many/repo-{i:04}")).collect();
        assert_eq!(second.texts("repo-name"), want);

        // A repository page lists at most ui.scanlimit tags, and sorts at
        // most ui.sortlimit by push time (a stat each).
        Registry::new(&b.url("")).tags("lots", 70).await;
        let listed = web.get("/ui/r/lots").await;
        assert!(listed.body.contains("Only the first tags are listed"));
        assert!(listed.body.contains("60 of 60 tags"));
        let by_time = web.get("/ui/r/lots?sort=pushed").await;
        assert!(by_time.body.contains("Too many tags to sort by push time"));
        assert_eq!(by_time.texts("tag-name")[0], "t-0000", "name order");
        let filtered = web.get("/ui/r/lots?sort=pushed&q=t-005").await;
        assert!(!filtered.body.contains("Too many tags"));
        assert_eq!(filtered.texts("tag-name").len(), 10);
    });
}
