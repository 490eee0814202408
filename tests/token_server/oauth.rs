//! The OAuth2 POST form (`docker login` uses it) and refresh tokens, on
//! both endpoints: stateless, bound to the account's current password.

use crate::{
    common::Berth,
    support::{self, *},
};

fn post(b: &Berth, form: &[(&str, &str)]) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    send(
        "POST",
        &token_url(b),
        Auth::None,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.into_bytes(),
    )
}

fn start() -> (Secrets, Berth) {
    let secrets = Secrets::new(
        KeyKind::EcP256,
        &[("ci", "ci-pass"), ("alice", "alice-pass")],
    );
    let b = start_fixture("ci-push.yml", &secrets, "");
    (secrets, b)
}

#[test]
fn password_grant_then_refresh_grant() {
    let (_secrets, b) = start();
    // What docker login sends.
    let r = post(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "ci"),
            ("password", "ci-pass"),
            ("service", SERVICE),
            ("scope", "repository:app:pull,push repository:other:pull"),
            ("client_id", "docker"),
            ("access_type", "offline"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["scope"],
        "repository:app:pull,push repository:other:pull"
    );
    assert!(body["issued_at"].is_string());
    assert!(
        body.get("token").is_none(),
        "the OAuth2 form has access_token only"
    );
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().expect("access_type=offline");
    let (_, claims) = jwt_parts(access);
    assert_eq!(support::granted(&claims, "app"), vec!["pull", "push"]);
    let r = send(
        "POST",
        &b.url("/v2/app/blobs/uploads/"),
        Auth::Bearer(access),
        &[],
        vec![],
    );
    assert_eq!(r.status, 202);

    // The refresh token buys tokens for other scopes, without the password.
    let r = post(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("service", SERVICE),
            ("scope", "repository:fresh:pull,push"),
            ("client_id", "docker"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert!(body.get("refresh_token").is_none(), "not asked for");
    let t = body["access_token"].as_str().unwrap();
    let (_, claims) = jwt_parts(t);
    assert_eq!(claims["sub"], "ci");
    assert_eq!(support::granted(&claims, "fresh"), vec!["pull", "push"]);
    let r = send(
        "POST",
        &b.url("/v2/fresh/blobs/uploads/"),
        Auth::Bearer(t),
        &[],
        vec![],
    );
    assert_eq!(r.status, 202);

    // A refresh token is no access token, and the other way round.
    let r = get(&b.url("/v2/"), Auth::Bearer(refresh));
    assert_eq!(r.status, 401, "refresh token refused by the registry");
    let grant = |token: &str| {
        post(
            &b,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("service", SERVICE),
            ],
        )
    };
    assert_eq!(grant(access).status, 401, "access token as refresh token");
    // Tampered: claims swapped for another account's, signature kept.
    let mut parts: Vec<String> = refresh.split('.').map(str::to_string).collect();
    let (_, mut claims) = jwt_parts(refresh);
    claims["sub"] = "alice".into();
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_eq!(
        grant(&parts.join(".")).status,
        401,
        "tampered refresh token"
    );
    assert_eq!(grant("not-a-jwt").status, 401);
    assert_eq!(grant(refresh).status, 200, "the genuine one still works");
}

#[test]
fn offline_token_on_get_and_revocation() {
    let (secrets, b) = start();
    let q = |offline: &str| {
        fetch_token(
            &b,
            &[
                ("service", SERVICE),
                ("scope", "repository:app:pull"),
                ("offline_token", offline),
                ("client_id", "test"),
            ],
            Auth::Basic("alice", "alice-pass"),
        )
    };
    assert!(q("false").json().get("refresh_token").is_none());
    let r = q("true");
    assert_eq!(r.status, 200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let (header, claims) = jwt_parts(&refresh);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["sub"], "alice");
    assert_ne!(
        claims["aud"], SERVICE,
        "a refresh token has its own audience"
    );
    assert!(claims.get("access").is_none());
    assert!(!refresh.contains("alice-pass"));
    let form = |t: &str| {
        post(
            &b,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t),
                ("service", SERVICE),
                ("scope", "repository:app:pull,push"),
            ],
        )
    };
    let r = form(&refresh);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        support::granted(
            &jwt_parts(r.json()["access_token"].as_str().unwrap()).1,
            "app"
        ),
        vec!["pull"],
        "the ACL still applies to refreshed tokens"
    );

    // alice's password changes: her refresh tokens stop working.
    let htpasswd = secrets.path("htpasswd");
    let text = std::fs::read_to_string(&htpasswd).unwrap();
    let changed: String = text
        .lines()
        .map(|l| match l.split_once(':') {
            Some(("alice", _)) => format!("alice:{}\n", bcrypt_hash("new-pass")),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&htpasswd, changed).unwrap();
    assert_eq!(form(&refresh).status, 401, "revoked by the password change");

    // No refresh token for anonymous, and none without offline_token.
    let secrets = Secrets::new(KeyKind::EcP256, &[("ci", "ci-pass")]);
    let anon = start_fixture("public-repo.yml", &secrets, "");
    let r = fetch_token(
        &anon,
        &[
            ("service", SERVICE),
            ("scope", "repository:public/hello:pull"),
            ("offline_token", "true"),
        ],
        Auth::None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none());
}

#[test]
fn post_errors() {
    let (_secrets, b) = start();
    let r = send(
        "POST",
        &token_url(&b),
        Auth::None,
        &[("content-type", "application/json")],
        br#"{"grant_type":"password"}"#.to_vec(),
    );
    assert_eq!(r.status, 400, "form bodies only");
    let r = post(
        &b,
        &[("grant_type", "client_credentials"), ("service", SERVICE)],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = post(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "ci"),
            ("service", SERVICE),
        ],
    );
    assert_eq!(r.status, 400, "password missing");
    let r = post(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "ci"),
            ("password", "x"),
            ("service", SERVICE),
        ],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "UNAUTHORIZED");
    let r = post(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "ci"),
            ("password", "ci-pass"),
            ("service", "elsewhere"),
        ],
    );
    assert_eq!(r.status, 400, "foreign service");
    let big = "x".repeat(64 * 1024);
    let r = post(
        &b,
        &[
            ("grant_type", "password"),
            ("username", &big),
            ("service", SERVICE),
        ],
    );
    assert_eq!(r.status, 400, "oversized form");
}
