//! `loadtest run --quick` against a real Berth on an ephemeral port: every
//! scenario must finish with operations done and zero errors, once with
//! htpasswd (Basic) and once with Berth's token server (the bearer dance,
//! anonymous pulls included).
//!
//! Berth's binary is the one `cargo test --workspace` builds for Berth's own
//! tests (target/<profile>/berth, beside this test's deps directory).

use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const USER: &str = "loadtest";
const PASSWORD: &str = "correct-horse";

fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/run_quick-<hash> → target/<profile>/berth
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("berth");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --bin berth; cargo test --workspace does)",
        bin.display()
    );
    bin
}

struct Berth {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start Berth with `config` (its `{addr}` replaced by a free port); ready
/// once it accepts connections. Retries on another port if the first was
/// taken in between.
fn start_berth(dir: &Path, config: &str) -> Berth {
    for attempt in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = dir.join(format!("config-{attempt}.yml"));
        fs::write(&cfg, config.replace("{addr}", &addr.to_string())).unwrap();
        let log = dir.join(format!("berth-{attempt}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(berth_bin())
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start berth");
        let mut berth = Berth { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Bounded: until the deadline or the process exits.
        while Instant::now() < deadline {
            if berth.child.try_wait().unwrap().is_some() {
                break;
            }
            if TcpStream::connect(addr).is_ok() {
                return berth;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "berth on {addr} did not come up (attempt {attempt}):\n{}",
            fs::read_to_string(&berth.log).unwrap_or_default()
        );
    }
    panic!("berth did not start");
}

fn loadtest_run(berth: &Berth, scenarios: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quick", "--clients", "4", "--duration", "1"])
        .args(["--large-layer", "4MiB", "--scenario", scenarios])
        .args(["--user", USER, "--password", PASSWORD])
        .arg("--url")
        .arg(format!("http://{}", berth.addr))
        .stdin(Stdio::null())
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest run failed ({}):\n{stdout}\n{stderr}\nberth log:\n{}",
        out.status,
        fs::read_to_string(&berth.log).unwrap_or_default()
    );
    out
}

/// Each scenario's `all` row: operations done and errors.
fn totals(stdout: &str) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut scenario = None;
    for line in stdout.lines() {
        if let Some((name, _)) = line
            .split_once(": ")
            .filter(|_| line.contains(" clients, "))
        {
            scenario = Some(name.to_string());
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"all") {
            let ops = cols[1].parse().expect("ops column");
            let errors = cols.last().unwrap().parse().expect("errors column");
            out.push((scenario.clone().expect("a table heading"), ops, errors));
        }
    }
    out
}

fn assert_clean(stdout: &str, want: &[&str]) {
    let t = totals(stdout);
    let names: Vec<&str> = t.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, want, "{stdout}");
    for (name, ops, errors) in &t {
        assert!(*ops > 0, "{name}: no operation completed\n{stdout}");
        assert_eq!(*errors, 0, "{name}: errors\n{stdout}");
    }
}

#[test]
fn every_scenario_against_berth_with_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/root\n\
         http:\n  addr: {{addr}}\n  secret: loadtest-test\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         auth:\n  htpasswd:\n    realm: loadtest\n    path: {d}/htpasswd\n",
        d = dir.path().display()
    );
    let berth = start_berth(dir.path(), &config);
    let out = loadtest_run(&berth, "all");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_clean(
        &stdout,
        &[
            "ci-push",
            "hot-pull",
            "head-heavy",
            "large-layer",
            "mixed-auth",
        ],
    );
    // htpasswd: anonymous pulls are refused, and that is no error.
    assert!(stdout.contains("anon manifest GET (denied)"), "{stdout}");
    // Docker-style pushes mount shared base layers from the base repository.
    assert!(stdout.contains("blob mount"), "{stdout}");
}

#[test]
fn bearer_token_dance_against_berths_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(st.success(), "openssl {args:?}");
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "token.key",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "token.key",
        "-subj",
        "/CN=loadtest",
        "-days",
        "2",
        "-out",
        "token.crt",
    ]);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    fs::write(d.join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/root\n\
         http:\n  addr: {{addr}}\n  secret: loadtest-test\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         auth:\n  token:\n    realm: http://{{addr}}/auth/token\n    service: loadtest\n\
         \x20   issuer: loadtest-issuer\n    rootcertbundle: {d}/token.crt\n\
         token_server:\n  issuer: loadtest-issuer\n  service: loadtest\n\
         \x20 signingkey: {d}/token.key\n  certificate: {d}/token.crt\n\
         \x20 htpasswd: {d}/htpasswd\n  anonymous: true\n  acl:\n\
         \x20   - match: {{account: {USER}}}\n      actions: [pull, push]\n\
         \x20   - match: {{account: \"\", name: mixed/public}}\n      actions: [pull]\n",
        d = d.display()
    );
    let berth = start_berth(d, &config);
    let out = loadtest_run(&berth, "ci-push,mixed-auth");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_clean(&stdout, &["ci-push", "mixed-auth"]);
    // The ACL lets anonymous clients pull the public repository.
    assert!(stdout.contains("anon manifest GET (allowed)"), "{stdout}");
    assert!(stdout.contains("anon blob GET"), "{stdout}");
}
