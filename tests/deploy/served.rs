//! Rendered configs served by a real `berth`, as a pod would run them (the
//! pod's mounted files and environment, on a free 127.0.0.1 port).

use std::time::Duration;

use crate::common::{self, Berth};
use crate::tools::*;

/// Start Berth on `pod`'s config with its storage root and listener moved to
/// the test's, plus `env` on top of the pod's.
fn serve(pod: &Pod, env: &[(&str, &str)]) -> Berth {
    let mut all: Vec<(&str, &str)> = pod
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.extend_from_slice(env);
    let config = pod.config_text.clone();
    Berth::start_with_env(
        |root, addr| {
            config
                .replace(
                    "rootdirectory: /var/lib/registry",
                    &format!("rootdirectory: {root}"),
                )
                .replace("addr: :5000", &format!("addr: {addr}"))
        },
        &all,
    )
}

/// One GET (optionally with Basic or Bearer credentials): status, the
/// WWW-Authenticate header, body.
fn get(url: &str, auth: Auth) -> (u16, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = crate::common::http::client();
        let req = match auth {
            Auth::None => client.get(url),
            Auth::Basic(user, password) => client.get(url).basic_auth(user, Some(password)),
            Auth::Bearer(token) => client.get(url).bearer_auth(token),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, challenge, resp.text().await.unwrap())
    })
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

fn status(url: &str) -> u16 {
    get(url, Auth::None).0
}

/// The password of the `ci` account in the chart's example values.
const CI_PASSWORD: &str = "ci-password";

/// The filesystem profile: GET / (liveness) is 200 with htpasswd on,
/// /health/storage (readiness) is 200, /v2/ is 401 until the account from
/// values signs in, and the metrics port answers on the ServiceMonitor's path.
#[test]
fn filesystem_profile_serves_its_probes() {
    let docs = documents(&render("ci/filesystem-values.yaml"));
    let pod = Pod::from_manifests(&docs);
    let container = &get_kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let liveness = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let readiness = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let berth = serve(&pod, &[("REGISTRY_HTTP_DEBUG_ADDR", &metrics_addr)]);
    assert_eq!(status(&berth.url(liveness)), 200, "liveness {liveness}");
    assert_eq!(status(&berth.url(readiness)), 200, "readiness {readiness}");
    assert_eq!(status(&berth.url("/v2/")), 401, "auth is on");
    let signed_in = get(&berth.url("/v2/"), Auth::Basic("ci", CI_PASSWORD));
    assert_eq!(signed_in.0, 200, "the htpasswd file from auth.users");
    assert!(
        common::wait_for_port(&metrics_addr, Duration::from_secs(10)),
        "metrics listener"
    );
    let monitor = get_kind(&docs, "ServiceMonitor");
    let path = monitor["spec"]["endpoints"][0]["path"].as_str().unwrap();
    assert_eq!(status(&format!("http://{metrics_addr}{path}")), 200);
}

/// The token profile: the chart's generated signing key (ECDSA P-256 by
/// default) and certificate, the htpasswd file and the ACL make a token
/// server whose tokens Berth accepts; the realm follows the request's host.
#[test]
fn token_profile_issues_tokens_berth_accepts() {
    let yaml = helm_template(
        None,
        &[
            "auth.type=token",
            "auth.users.ci=$2y$10$mEPTBb20tf52UH5jjg2iKu28/LWBAWBwytQejTXekCWnXIOgtr89i",
            "metrics.enabled=false",
        ],
    )
    .unwrap();
    let pod = Pod::from_manifests(&documents(&yaml));
    let berth = serve(&pod, &[]);
    let (code, challenge, _) = get(&berth.url("/v2/"), Auth::None);
    assert_eq!(code, 401);
    let realm = format!("http://{}/auth/token", berth.addr);
    assert!(
        challenge.contains(&format!("Bearer realm=\"{realm}\",service=\"berth\"")),
        "{challenge}"
    );
    let scope = "repository:team/app:pull,push";
    let url = format!("{realm}?service=berth&scope={scope}");
    let (code, _, _) = get(&url, Auth::Basic("ci", "wrong"));
    assert_eq!(code, 401, "a wrong password gets no token");
    let (code, _, body) = get(&url, Auth::Basic("ci", CI_PASSWORD));
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = body["token"].as_str().unwrap();
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256", "the generated key is ECDSA P-256");
    let (code, _, _) = get(&berth.url("/v2/"), Auth::Bearer(token));
    assert_eq!(code, 200, "Berth accepts the token its token server signed");
    let (code, _, _) = get(&berth.url("/v2/team/app/tags/list"), Auth::Bearer(token));
    assert_eq!(code, 404, "granted pull: the repository is just empty");
}
