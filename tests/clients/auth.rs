//! `docker login` + push/pull against Berth with htpasswd basic auth.

use std::time::Duration;

use super::{
    daemons::Dockerd,
    docker::{build, import_base, push},
    support::run,
};
use crate::common::Berth;

fn entry(user: &str, password: &str) -> String {
    crate::common::htpasswd::entry(user, password, 5)
}

#[test]
fn docker_login_push_pull_with_htpasswd() {
    let work = tempfile::tempdir().unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, entry("ci", "ci-password")).unwrap();
    let path = htpasswd.display().to_string();
    let berth = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {path}\n"
        )
    });
    let d = Dockerd::start();
    import_base(&d, work.path(), "berth-auth/base:1");
    let reference = format!("{}/team/secure:1", berth.addr);
    let image = build(
        &d,
        work.path(),
        "berth-auth/base:1",
        &reference,
        &[("app.txt", "authenticated layer\n")],
    );

    // Not logged in: the push is refused and nothing is stored.
    let out = run(&mut d.cli(&["push", &reference]), Duration::from_secs(120));
    assert!(!out.status.success(), "push without login must fail");
    assert!(
        out.all().contains("no basic auth credentials") || out.all().contains("unauthorized"),
        "{}",
        out.all()
    );
    assert!(!berth.root.join("docker/registry/v2/blobs").exists());

    let login = |password: &str| {
        run(
            &mut d.cli(&["login", "-u", "ci", "-p", password, &berth.addr]),
            Duration::from_secs(60),
        )
    };
    let bad = login("wrong");
    assert!(!bad.status.success());
    assert!(
        bad.all().to_lowercase().contains("unauthorized"),
        "{}",
        bad.all()
    );
    let good = login("ci-password");
    assert!(good.status.success(), "{}", good.all());
    assert!(good.all().contains("Login Succeeded"));

    let (digest, _) = push(&d, &reference);
    d.remove_all_images();
    d.ok(&["pull", &reference]);
    assert_eq!(d.inspect(&reference, "{{.Id}}"), image.id);
    d.ok(&["pull", &format!("{}/team/secure@{digest}", berth.addr)]);

    // After logout the registry asks again.
    d.ok(&["logout", &berth.addr]);
    let out = run(&mut d.cli(&["pull", &reference]), Duration::from_secs(60));
    assert!(!out.status.success());
}
