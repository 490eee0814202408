//! Mutual TLS (`http.tls.clientcas`): a client certificate is required and
//! must come from one of the listed CAs.

use super::{
    client::{self, ANY_VERSION},
    serving::{cert_lines, start_tls},
};
use crate::common::pki::{write, Ca, Leaf};

#[test]
fn client_certificates_are_required_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::root("Berth Server CA");
    let leaf = server_ca.server(&["127.0.0.1"]);
    // Two client CAs in two files: either one admits its clients.
    let team_a = Ca::root("Team A Clients");
    let team_b = Ca::root("Team B Clients");
    let stranger = Ca::root("Somebody Else");
    let a = write(dir.path(), "a.pem", &team_a.pem());
    let b = write(dir.path(), "b.pem", &team_b.pem());
    let berth = start_tls(&format!(
        "{}    clientcas:\n      - {}\n      - {}\n",
        cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem),
        a.display(),
        b.display()
    ));
    let roots = [server_ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let get = |identity: Option<&Leaf>| {
        client::get(
            &berth.addr,
            "127.0.0.1",
            client::config(&roots, ANY_VERSION, identity),
            "/v2/",
        )
    };

    let err = get(None).unwrap_err();
    assert!(err.contains("CertificateRequired"), "no certificate: {err}");

    let err = get(Some(&stranger.client("mallory"))).unwrap_err();
    assert!(err.contains("UnknownCA"), "wrong CA: {err}");

    for (team, ca) in [("a", &team_a), ("b", &team_b)] {
        let ok = get(Some(&ca.client("builder")))
            .unwrap_or_else(|e| panic!("team {team}: {e}\n{}", berth.logs()));
        assert_eq!(ok.status, "HTTP/1.1 200 OK", "team {team}");
    }
}
