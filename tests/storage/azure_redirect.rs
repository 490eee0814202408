//! Azure blob redirects against Azurite: the SAS URL a blob GET is sent to
//! reads that blob and nothing else; with a shared key it is a service SAS,
//! with an Entra ID (OAuth) token a user delegation SAS whose key is fetched
//! once and reused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth::storage::StorageDriver;
use bytes::Bytes;

use crate::common::{
    azurite::{Azurite, ACCOUNT},
    http::sha256,
    noise::xorshift_bytes,
    pki, Berth,
};

/// The query parameters of a URL, in order.
fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(url: &str, name: &str) -> String {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
}

fn rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The same SAS query on another path of the same host.
fn moved(url: &str, path: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path(path);
    u.to_string()
}

/// What a holder of `sas` (a read-only SAS for `blob`, whose content is
/// `body`) can and cannot do with it; `other` is another blob's URL path
/// and `client` trusts the store's certificate.
async fn check_sas_scope(client: &reqwest::Client, sas: &str, body: &[u8], other: &str) {
    // It reads the blob, with a plain client and no credentials.
    let r = client.get(sas).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == body, "SAS download differs");
    // Read-only, blob-scoped, 20 minutes (distribution's figure).
    assert_eq!(param(sas, "sp"), "r", "{sas}");
    assert_eq!(param(sas, "sr"), "b", "{sas}");
    let (st, se) = (rfc3339(&param(sas, "st")), rfc3339(&param(sas, "se")));
    assert_eq!(se.duration_since(st).unwrap(), Duration::from_secs(20 * 60));

    // It cannot overwrite the blob, delete it, or write another.
    let put = client
        .put(sas)
        .header("x-ms-blob-type", "BlockBlob")
        .body("overwritten")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403, "{}", put.text().await.unwrap());
    let del = client.delete(sas).send().await.unwrap();
    assert_eq!(del.status(), 403);
    let elsewhere = moved(sas, &format!("{other}-new"));
    let put = client
        .put(&elsewhere)
        .header("x-ms-blob-type", "BlockBlob")
        .body("planted")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    // Nor read another blob, nor list the container.
    let r = client.get(moved(sas, other)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // `/<account>/<container>`
    let container = other.split('/').take(3).collect::<Vec<_>>().join("/");
    let mut list = url::Url::parse(&moved(sas, &container)).unwrap();
    list.query_pairs_mut()
        .append_pair("restype", "container")
        .append_pair("comp", "list");
    assert_eq!(client.get(list).send().await.unwrap().status(), 403);
    // A tampered signature is refused: the store really checks it.
    let mut bad = url::Url::parse(sas).unwrap();
    let pairs: Vec<(String, String)> = query(sas)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "sig" {
                let flipped = if v.starts_with('A') { "B" } else { "A" };
                format!("{flipped}{}", &v[1..])
            } else {
                v
            };
            (k, v)
        })
        .collect();
    bad.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(client.get(bad).send().await.unwrap().status(), 403);

    // After all that, the blob is as it was.
    let r = client.get(sas).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == body, "the blob changed");
}

/// Shared key: a service SAS signed locally, for GET only, and none at all
/// with `storage.redirect.disable`.
#[tokio::test]
async fn azure_service_sas_reads_one_blob_only() {
    let az = Azurite::start();
    let d = az.driver("sas", "/root").await.with_redirect(true);
    let path = "/docker/registry/v2/blobs/sha256/ab/abcdef/data";
    let other = "/docker/registry/v2/blobs/sha256/cd/cdef01/data";
    let body = xorshift_bytes(77, 300_000);
    d.put_content(path, Bytes::from(body.clone()))
        .await
        .unwrap();
    d.put_content(other, Bytes::from_static(b"secret"))
        .await
        .unwrap();

    let sas = d.redirect_url(path, "GET").await.unwrap().expect("a URL");
    let blob = format!("{}/sas/root{path}", az.service_url());
    assert!(sas.starts_with(&format!("{blob}?")), "{sas}");
    let other_path = format!("/{ACCOUNT}/sas/root{other}");
    let client = crate::common::http::client();
    check_sas_scope(&client, &sas, &body, &other_path).await;

    // Uploads never get a URL; nor does anything with redirects off (the
    // driver's default, as `storage.redirect.disable: true` leaves it).
    assert_eq!(d.redirect_url(path, "PUT").await.unwrap(), None);
    let off = az.driver("sas", "/root").await;
    assert_eq!(off.redirect_url(path, "GET").await.unwrap(), None);
}

/// An Entra ID token, as Azurite's `--oauth basic` checks it: issuer,
/// audience and lifetime (the signature is not verified).
fn entra_token(oid: &str, tid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "oid": oid, "tid": tid,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"azurite does not check this"),
    )
    .unwrap()
}

/// An Entra ID token (here a fixed one from `AZURE_STORAGE_TOKEN`; on AKS
/// workload or managed identity): Berth signs user delegation SAS URLs,
/// fetching the delegation key once for many redirects.
#[tokio::test]
async fn azure_user_delegation_sas_under_entra_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("azurite-ca");
    let leaf = ca.server(&["127.0.0.1"]);
    let cert = pki::write(dir.path(), "azurite.pem", &leaf.cert_pem);
    let key = pki::write(dir.path(), "azurite.key", &leaf.key_pem);
    let ca_file = pki::write(dir.path(), "ca.pem", &ca.pem());
    let az = Azurite::start_oauth(&cert, &key);
    let (oid, tid) = (
        "11059fcc-5514-4800-b5f8-49808b9cfab6",
        "ab1f708d-50f6-404c-a006-d71b2ac7a606",
    );
    let token = entra_token(oid, tid);
    let client = crate::common::http::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The container, created with the token (Azurite refuses bearer tokens
    // over plain HTTP, so this is HTTPS end to end).
    let r = client
        .put(format!("{}/udsas?restype=container", az.service_url()))
        .bearer_auth(&token)
        .header("x-ms-version", "2023-11-03")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // No account key: `credentials` default, the token from the environment.
    let storage = format!(
        "  azure:\n    accountname: {ACCOUNT}\n    container: udsas\n    serviceurl: {}\n",
        az.service_url()
    );
    let berth = Berth::start_with_env(
        |_root, addr| {
            format!("version: 0.1\nstorage:\n{storage}http:\n  addr: {addr}\n  secret: s\n")
        },
        &[
            ("AZURE_STORAGE_TOKEN", token.as_str()),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    );
    let plain = crate::common::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut digests = Vec::new();
    let mut blobs = Vec::new();
    for seed in [1u64, 2] {
        let blob = xorshift_bytes(seed * 1000 + 1, 200_000 + seed as usize);
        let digest = sha256(&blob);
        let r = plain
            .post(berth.url(&format!("/v2/ud/app/blobs/uploads/?digest={digest}")))
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", berth.logs());
        digests.push(digest);
        blobs.push(blob);
    }

    let mut urls = Vec::new();
    for digest in digests.iter().chain(&digests) {
        let r = plain
            .get(berth.url(&format!("/v2/ud/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307, "{}", berth.logs());
        urls.push(r.headers()["location"].to_str().unwrap().to_string());
    }
    // A user delegation SAS: it names the key's owner and validity.
    for u in &urls {
        assert!(u.starts_with(&az.service_url()), "{u}");
        assert_eq!(param(u, "skoid"), oid);
        assert_eq!(param(u, "sktid"), tid);
        assert_eq!(param(u, "sks"), "b");
    }
    // One key signed them all.
    let key_of = |u: &str| (param(u, "skt"), param(u, "ske"));
    assert!(
        urls.iter().all(|u| key_of(u) == key_of(&urls[0])),
        "{urls:?}"
    );
    // The key outlives the SAS by far (a key fetched for one SAS would
    // expire with it): it is kept for many redirects.
    let (skt, ske) = key_of(&urls[0]);
    assert!(rfc3339(&ske).duration_since(rfc3339(&skt)).unwrap() >= Duration::from_secs(3600));

    let blob_path = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        format!(
            "/{ACCOUNT}/udsas/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        )
    };
    assert_eq!(
        url::Url::parse(&urls[0]).unwrap().path(),
        blob_path(&digests[0])
    );
    check_sas_scope(&client, &urls[0], &blobs[0], &blob_path(&digests[1])).await;
    let r = client.get(&urls[1]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == blobs[1]);

    // Four redirects, one Get User Delegation Key (counted at the store, whose
    // log has long been written by now: many requests have come since).
    let fetched = az
        .logs()
        .lines()
        .filter(|l| l.contains("comp=userdelegationkey"))
        .count();
    assert_eq!(fetched, 1, "{}", az.logs());
}
