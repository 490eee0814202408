//! Page caps of the listings (`tags.maxtags`, `catalog.maxentries`,
//! `referrers.maxentries`): a request without `n`, or with a larger one, gets
//! a capped page and a Link; following the Links yields every entry once.
//! Also the memory limit keys (`storage.uploadbuffers`, `chunksize`) as
//! `config check` takes them; their effect is tested in tests/storage/limits.rs.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{header, sha256, Client, OCI_MANIFEST};
use crate::common::Berth;

fn berth_with(extra: &'static str, env: &[(&str, &str)]) -> Berth {
    Berth::start_with_env(
        move |root, addr| {
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: test-secret\n{extra}"
            )
        },
        env,
    )
}

/// The URL in `Link: <url>; rel="next"`, if any.
pub(crate) fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link")?;
    assert!(link.ends_with("rel=\"next\""), "{link}");
    Some(link[link.find('<')? + 1..link.find('>')?].to_string())
}

/// Follow Links from `first`: every page's `key` entries, and the page sizes.
pub(crate) async fn follow(c: &Client, first: &str, key: &str) -> (Vec<Value>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    let mut url = first.to_string();
    for _ in 0..100 {
        let r = c.get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        let next = next_link(&r);
        let body: Value = r.json().await.unwrap();
        let items = body[key].as_array().unwrap().clone();
        sizes.push(items.len());
        all.extend(items);
        match next {
            Some(n) => url = n,
            None => return (all, sizes),
        }
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn tags_are_capped_without_n_and_links_lead_to_the_rest() {
    let b = berth_with("tags:\n  maxtags: 3\n", &[]);
    let c = Client::new(&b);
    let (_, body) = c.push_image("many/tags", "v1", "t").await;
    let m: Value = serde_json::from_slice(&body).unwrap();
    let mut tags = vec!["v1".to_string()];
    for t in ["v1.0", "v1-rc", "1.0", "1.0.1", "latest", "v2", "a"] {
        let r = c.put_manifest("many/tags", t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        tags.push(t.to_string());
    }
    tags.sort();

    let r = c.get("/v2/many/tags/tags/list").await;
    let link = next_link(&r).expect("a capped first page links to the next");
    assert!(link.contains("/v2/many/tags/tags/list?n=3&last="), "{link}");
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["tags"], json!(tags[..3]));

    // Asking for more than the cap gets the cap.
    let r = c.get("/v2/many/tags/tags/list?n=1000").await;
    assert!(next_link(&r).is_some());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(tags[..3]));

    let (all, sizes) = follow(&c, "/v2/many/tags/tags/list", "tags").await;
    assert_eq!(all, tags.iter().map(|t| json!(t)).collect::<Vec<_>>());
    assert_eq!(sizes, [3, 3, 2]);
    let (all, sizes) = follow(&c, "/v2/many/tags/tags/list?n=2", "tags").await;
    assert_eq!(all.len(), tags.len());
    assert!(sizes.iter().all(|s| *s <= 2));
}

#[tokio::test]
async fn the_caps_come_from_the_environment_too() {
    let b = berth_with(
        "",
        &[
            ("REGISTRY_TAGS_MAXTAGS", "2"),
            ("REGISTRY_CATALOG_MAXENTRIES", "1"),
        ],
    );
    let c = Client::new(&b);
    let (_, body) = c.push_image("env/one", "a", "e").await;
    let m: Value = serde_json::from_slice(&body).unwrap();
    for t in ["b", "c"] {
        let r = c.put_manifest("env/one", t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    c.push_image("env/two", "a", "f").await;
    let (_, sizes) = follow(&c, "/v2/env/one/tags/list", "tags").await;
    assert_eq!(sizes, [2, 1]);
    let (repos, sizes) = follow(&c, "/v2/_catalog", "repositories").await;
    assert_eq!(repos, [json!("env/one"), json!("env/two")]);
    assert_eq!(sizes, [1, 1]);
}

#[tokio::test]
async fn catalog_pages_walk_the_tree_in_order() {
    let b = berth_with("catalog:\n  maxentries: 2\n", &[]);
    let c = Client::new(&b);
    let names = [
        "zeta",
        "alpha/one",
        "alpha/one/deeper",
        "alpha-beta",
        "alpha/0",
        "mid",
    ];
    for (i, n) in names.iter().enumerate() {
        c.push_image(n, "t", &i.to_string()).await;
    }
    let r = c.get("/v2/_catalog?n=50").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "n above catalog.maxentries is capped"
    );
    let (all, sizes) = follow(&c, "/v2/_catalog", "repositories").await;
    assert_eq!(
        all,
        [
            "alpha/0",
            "alpha/one",
            "alpha/one/deeper",
            "alpha-beta",
            "mid",
            "zeta"
        ]
        .iter()
        .map(|n| json!(n))
        .collect::<Vec<_>>()
    );
    assert_eq!(sizes, [2, 2, 2]);
}

#[tokio::test]
async fn referrers_come_in_pages_with_links() {
    let b = berth_with("referrers:\n  maxentries: 2\n", &[]);
    let c = Client::new(&b);
    let (subject, subject_bytes) = c.push_image("refs/app", "v1", "base").await;
    let empty = c.push_blob("refs/app", b"{}").await;
    let payload = c.push_blob("refs/app", b"payload").await;
    let mut want = Vec::new();
    let mut sboms = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "sbom" } else { "signature" };
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": format!("application/vnd.example.{kind}"),
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": payload, "size": 7}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()},
            "annotations": {"n": i.to_string()}});
        let d = sha256(&serde_json::to_vec(&m).unwrap());
        let r = c.put_manifest("refs/app", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        if kind == "sbom" {
            sboms.push(d.clone());
        }
        want.push(d);
    }
    want.sort();
    sboms.sort();
    let digests = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect()
    };

    let first = format!("/v2/refs/app/referrers/{subject}");
    let r = c.get(&first).await;
    assert!(next_link(&r).unwrap().contains("last=sha256"));
    let (all, sizes) = follow(&c, &first, "manifests").await;
    assert_eq!(digests(&all), want, "every referrer once, in digest order");
    assert_eq!(sizes, [2, 2, 1]);

    let filtered = format!("{first}?artifactType=application/vnd.example.sbom");
    let r = c.get(&filtered).await;
    assert_eq!(header(&r, "oci-filters-applied"), Some("artifactType"));
    let link = next_link(&r).unwrap();
    assert!(
        link.contains("artifactType=application%2Fvnd.example.sbom"),
        "{link}"
    );
    let (all, _) = follow(&c, &filtered, "manifests").await;
    assert_eq!(digests(&all), sboms);
    assert!(all
        .iter()
        .all(|d| d["artifactType"] == "application/vnd.example.sbom"));
}

/// `berth config check` on a config; (exit code, stderr).
fn config_check(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "check"])
        .arg(&f)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The memory limits beside the page caps: `storage.uploadbuffers` from
/// YAML or REGISTRY_* variables, and the `chunksize` cap, checked at start.
#[test]
fn memory_limit_keys_are_checked_at_start() {
    let fs = "storage:\n  filesystem:\n    rootdirectory: /tmp/x\n";
    assert_eq!(config_check(fs, &[]).0, 0);
    let ok = format!("{fs}  uploadbuffers:\n    budget: 33554432\n    wait: 5s\n");
    assert_eq!(config_check(&ok, &[]).0, 0);
    let (code, err) = config_check(fs, &[("REGISTRY_STORAGE_UPLOADBUFFERS_BUDGET", "1024")]);
    assert_eq!(code, 2);
    assert!(err.contains("storage.uploadbuffers.budget"), "{err}");
    let (code, err) = config_check(fs, &[("REGISTRY_STORAGE_UPLOADBUFFERS_WAIT", "soon")]);
    assert_eq!(code, 2);
    assert!(err.contains("storage.uploadbuffers.wait"), "{err}");
    let env = [
        ("REGISTRY_STORAGE_UPLOADBUFFERS_BUDGET", "67108864"),
        ("REGISTRY_STORAGE_UPLOADBUFFERS_WAIT", "1m"),
    ];
    assert_eq!(config_check(fs, &env).0, 0);
    let s3 = "storage:\n  s3:\n    region: r\n    bucket: b\n    chunksize: 5368709120\n";
    let (code, err) = config_check(s3, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("storage.s3.chunksize"), "{err}");
}
