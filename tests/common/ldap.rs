//! Debian's slapd for the directory-login tests: the config, schema and
//! people of tests/fixtures/ldap in a temp dir, `ldap://` (StartTLS) and
//! `ldaps://` on free 127.0.0.1 ports with a test CA, seeded online so the
//! memberof overlay fills in `memberOf`; stopped (SIGKILL) on drop. It can
//! be stopped and started again in place (same ports, same data).

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    free_port, pki,
    process::{require_tool, wait_ready, wait_with_deadline},
};

/// The service account the registry binds as.
pub const BIND_DN: &str = "cn=berth,ou=services,dc=example,dc=org";
pub const BIND_PASSWORD: &str = "berth-svc-pw";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";

pub struct Slapd {
    pub port: u16,
    pub ldaps_port: u16,
    /// The test CA's certificate (PEM file).
    pub ca: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn fixture(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ldap")
            .join(name),
    )
    .unwrap()
}

impl Slapd {
    pub fn start() -> Slapd {
        require_tool("slapd", "slapd");
        require_tool("ldapadd", "ldap-utils");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("db")).unwrap();
        let ca = pki::Ca::root("berth test ldap ca");
        let leaf = ca.server(&["127.0.0.1"]);
        let ca_path = pki::write(d, "ca.pem", &ca.pem());
        pki::write(d, "server.pem", &leaf.cert_pem);
        pki::write(d, "server.key", &leaf.key_pem);
        fs::write(d.join("ad-mini.schema"), fixture("ad-mini.schema")).unwrap();
        let conf = fixture("slapd.conf").replace("{dir}", &d.display().to_string());
        fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut s = Slapd {
            port: free_port(),
            ldaps_port: free_port(),
            ca: ca_path,
            dir,
            child: None,
        };
        s.spawn();
        // Online, so the memberof overlay computes memberOf.
        let seed = s.dir.path().join("seed.ldif");
        fs::write(&seed, fixture("seed.ldif")).unwrap();
        let mut add = Command::new("ldapadd")
            .env("LDAPNOINIT", "1")
            .args([
                "-x",
                "-H",
                &s.url(),
                "-D",
                "cn=admin,dc=example,dc=org",
                "-w",
                "adminpw",
                "-f",
            ])
            .arg(&seed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_with_deadline(&mut add, Duration::from_secs(20));
        assert!(
            status.is_some_and(|st| st.success()),
            "ldapadd of the seed failed ({status:?}):\n{}",
            s.logs()
        );
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = fs::File::create(d.join("slapd.log")).unwrap();
        let listen = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.port, self.ldaps_port
        );
        // `-d none` keeps it in the foreground (the child is slapd) and
        // still prints why it stops; no `-u`: it keeps our user.
        let mut child = Command::new("slapd")
            .args(["-d", "none", "-h", &listen, "-f"])
            .arg(d.join("slapd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn slapd");
        let port = self.port;
        let path = d.join("slapd.log");
        wait_ready(
            &mut child,
            "slapd",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || fs::read_to_string(&path).unwrap_or_default(),
        );
        self.child = Some(child);
    }

    /// StartTLS URL.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// Kill it (its data stays): the directory is down.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
