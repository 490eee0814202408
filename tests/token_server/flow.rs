//! docker's token flow end to end, the issued JWT's shape, both key types,
//! request errors, and the failed-login throttle.

use crate::{
    common::Berth,
    support::{self, *},
};

/// docker/libtrust's key id, computed here independently of Berth's.
fn libtrust_kid(spki_der: &[u8]) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&sum[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("ci", "ci-pass"), ("alice", "alice-pass")]
}

#[test]
fn six_step_flow_pull_and_push_rs256() {
    let secrets = Secrets::new(KeyKind::Rsa, &users());
    let b = start_fixture("ci-push.yml", &secrets, "");
    let base = b.url("");

    // 1-2: the registry challenges, naming the token server, service and scope.
    let r = get(&b.url("/v2/"), Auth::None);
    assert_eq!(r.status, 401);
    let c = challenge(r.header("www-authenticate").unwrap());
    assert_eq!(c["realm"], token_url(&b));
    assert_eq!(c["service"], SERVICE);
    let r = send(
        "POST",
        &b.url("/v2/app/blobs/uploads/"),
        Auth::None,
        &[],
        vec![],
    );
    assert_eq!(r.status, 401);
    let c = challenge(r.header("www-authenticate").unwrap());
    assert_eq!(c["scope"], "repository:app:pull,push");

    // 3-4: a token for exactly that, with Basic credentials.
    let t = fetch_token(
        &b,
        &[
            ("service", SERVICE),
            ("scope", &c["scope"]),
            ("account", "ci"),
        ],
        Auth::Basic("ci", "ci-pass"),
    );
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let body = t.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(
        body.get("refresh_token").is_none(),
        "only with offline_token=true"
    );
    let token = body["token"].as_str().unwrap();

    // The JWT: header and claims as docker's spec and distribution expect.
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], libtrust_kid(&secrets.spki_der()));
    assert!(header.get("x5c").is_none(), "x5c only when configured");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "ci");
    assert_eq!(claims["aud"], SERVICE);
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - iat,
        300,
        "expiration honoured"
    );
    assert!(claims["nbf"].as_u64().unwrap() <= iat);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "app", "actions": ["pull", "push"]}])
    );

    // 5-6: retried with the token, the request goes through.
    let r = send(
        "POST",
        &b.url("/v2/app/blobs/uploads/"),
        Auth::Bearer(token),
        &[],
        vec![],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(get(&b.url("/v2/"), Auth::Bearer(token)).status, 200);

    // A whole push (blobs and manifest), then a pull by another account.
    let put = push_image(&base, "app", "v1", Some(("ci", "ci-pass")));
    assert_eq!(put.status, 201, "{}", put.text());
    let pulled = pull_manifest(&base, "app", "v1", Some(("alice", "alice-pass")));
    assert_eq!(pulled.status, 200, "{}", pulled.text());
    assert_eq!(
        pulled.header("docker-content-digest"),
        put.header("docker-content-digest")
    );
}

#[test]
fn es256_static_users_x5c_and_lifetime() {
    let secrets = Secrets::new(KeyKind::EcP256, &[]);
    let hash = bcrypt_hash("pw");
    let b = Berth::start_with(|root, addr| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {crt}\n\
             token_server:\n  issuer: {ISSUER}\n  service: {SERVICE}\n  signingkey: {key}\n  certificate: {crt}\n  x5c: true\n  expiration: 120\n\
             \x20 users:\n    dev: \"{hash}\"\n  acl:\n    - match: {{account: dev}}\n      actions: [pull]\n",
            crt = secrets.path("token.crt"),
            key = secrets.path("token.key"),
        )
    });
    let t = token(&b, "repository:lib/x:pull,push", Auth::Basic("dev", "pw"));
    let (header, claims) = jwt_parts(&t);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], libtrust_kid(&secrets.spki_der()));
    let x5c = header["x5c"].as_array().expect("x5c header");
    let pem = std::fs::read_to_string(secrets.path("token.crt")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(x5c, &vec![serde_json::Value::from(b64)]);
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap() - iat, 120);
    assert_eq!(granted(&claims, "lib/x"), vec!["pull"]);
    // Berth verifies an ES256 token (through the x5c chain): auth passes and
    // the missing manifest is the answer.
    let r = get(&b.url("/v2/lib/x/manifests/latest"), Auth::Bearer(&t));
    assert_eq!(r.status, 404, "{}", r.text());
    // A static user with a wrong password is refused.
    let r = fetch_token(&b, &[("service", SERVICE)], Auth::Basic("dev", "nope"));
    assert_eq!(r.status, 401);
}

#[test]
fn malformed_and_refused_requests() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let b = start_fixture("ci-push.yml", &secrets, "");
    let ci = || Auth::Basic("ci", "ci-pass");
    let code = |r: &Resp| (r.status, r.error_code());

    let r = fetch_token(&b, &[("service", "other.example.com")], ci());
    assert_eq!(code(&r), (400, "UNSUPPORTED".into()), "foreign service");
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("other.example.com"));
    assert_eq!(code(&fetch_token(&b, &[], ci())).0, 400, "no service");
    for scope in [
        "repository:app",
        "repository::pull",
        "repository:app:",
        "bogus",
    ] {
        let r = fetch_token(&b, &[("service", SERVICE), ("scope", scope)], ci());
        assert_eq!(r.status, 400, "{scope}: {}", r.text());
    }
    let r = fetch_token(&b, &[("service", SERVICE), ("account", "alice")], ci());
    assert_eq!(r.status, 400, "account must be the credentials' user");

    // Credentials: missing (anonymous is off), unknown account, wrong password.
    let r = fetch_token(&b, &[("service", SERVICE)], Auth::None);
    assert_eq!(code(&r), (401, "UNAUTHORIZED".into()));
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    let r = fetch_token(&b, &[("service", SERVICE)], Auth::Basic("mallory", "x"));
    assert_eq!(code(&r), (401, "UNAUTHORIZED".into()), "unknown account");
    let r = fetch_token(&b, &[("service", SERVICE)], Auth::Basic("ci", "wrong"));
    assert_eq!(r.status, 401);
    let r = fetch_token(&b, &[("service", SERVICE)], Auth::Bearer("x.y.z"));
    assert_eq!(r.status, 401, "only Basic credentials are taken");
    assert!(b.logs().contains("failed login"), "failures are logged");

    // A scope with a port in the registry name, and the catalog.
    let t = token(&b, "repository:localhost:5000/app:pull", ci());
    assert_eq!(
        granted(&jwt_parts(&t).1, "localhost:5000/app"),
        vec!["pull"]
    );
    let t = token(&b, "registry:catalog:*", ci());
    assert_eq!(
        granted(&jwt_parts(&t).1, "catalog"),
        Vec::<String>::new(),
        "ci has no *"
    );
}

#[test]
fn repeated_failures_are_throttled() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let b = start_fixture(
        "ci-push.yml",
        &secrets,
        "  throttle:\n    maxfailures: 3\n    window: 300\n    maxdelay: 60\n",
    );
    let q = [("service", SERVICE)];
    for _ in 0..3 {
        assert_eq!(fetch_token(&b, &q, Auth::Basic("ci", "guess")).status, 401);
    }
    // Blocked: even the right password is not looked at, on GET and POST.
    let r = fetch_token(&b, &q, Auth::Basic("ci", "ci-pass"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    let form = "grant_type=password&username=ci&password=ci-pass&service=registry.example.com";
    let r = send(
        "POST",
        &token_url(&b),
        Auth::None,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into(),
    );
    assert_eq!(r.status, 429);
    // Requests without credentials are no guesses and are not throttled.
    assert_eq!(fetch_token(&b, &q, Auth::None).status, 401);
    // Another client address is unaffected.
    let other = support::send_from(
        "127.0.0.2",
        reqwest::Url::parse_with_params(&token_url(&b), q)
            .unwrap()
            .as_str(),
        Auth::Basic("ci", "ci-pass"),
    );
    assert_eq!(other.status, 200, "{}", other.text());
    let logs = b.logs();
    assert!(
        logs.contains("failed login") && logs.contains("127.0.0.1"),
        "{logs}"
    );
    assert!(logs.contains("throttled"), "{logs}");
}

#[test]
fn served_under_http_prefix_outside_the_v2_check() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let b = Berth::start_with(|root, addr| {
        fixture("ci-push.yml", &secrets, root, addr)
            .replace("  secret:", "  prefix: /registry\n  secret:")
            .replace(
                &format!("http://{addr}/auth/token"),
                &format!("http://{addr}/registry/token"),
            )
            + "  path: /token\n"
    });
    let r = get(&b.url("/registry/v2/"), Auth::None);
    assert_eq!(r.status, 401);
    let c = challenge(r.header("www-authenticate").unwrap());
    assert_eq!(c["realm"], b.url("/registry/token"));
    // No registry credentials are needed to reach the token endpoint itself.
    let url = format!("{}?service={SERVICE}&scope=repository:app:pull", c["realm"]);
    let t = get(&url, Auth::Basic("alice", "alice-pass"));
    assert_eq!(t.status, 200, "{}", t.text());
    assert!(
        t.header("x-request-id").is_some(),
        "the API's layer applies"
    );
    let token = t.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&b.url("/registry/v2/"), Auth::Bearer(&token)).status,
        200
    );
    assert_eq!(
        get(&b.url("/token"), Auth::None).status,
        404,
        "only under the prefix"
    );
}
