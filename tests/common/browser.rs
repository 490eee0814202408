//! A real browser for the web UI's tests: Debian's `chromium`, headless, driven
//! over WebDriver by `fantoccini` through a `chromedriver` of the test's own.
//!
//! Each `Browser` has its own chromedriver on a free 127.0.0.1 port and its own
//! temp dir (profile, cache, home), so tests run in parallel without sharing
//! cookies or cache. Chromium reaches nothing but loopback, so a page that
//! needs the internet (a CDN script, a web font) fails here instead of passing
//! by luck. tests/run.sh installs the Debian packages chromium, chromium-driver.

use std::{
    fmt::Display,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{cookies::Cookie, elements::Element, error::CmdError, wd::TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver answers /status within a second; 20 s covers a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a page load, a form submission or an element lookup may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

pub struct Browser {
    /// The raw WebDriver client, for what the helpers below do not cover.
    pub client: Client,
    /// Held for its Drop: kills chromedriver and Chromium, even on a panic.
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics (with
    /// chromedriver's log) if either is missing or does not come up in time.
    pub async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the UI tests need Debian's chromium and chromium-driver \
                 (tests/run.sh installs them: apt-get install chromium chromium-driver)"
            );
        }
        // The port is picked then released, so another process may take it
        // first: chromedriver then exits at once and we try another one.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let mut driver = Driver::spawn(port);
            if !driver.wait_ready(port).await {
                continue;
            }
            let profile = driver.dir.path().join("profile");
            let caps = json!({ "goog:chromeOptions": { "binary": CHROMIUM, "args": [
                "--headless=new",
                // Containers give no user namespaces for the sandbox, no GPU,
                // and often a 64 MiB /dev/shm that Chromium would crash past.
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
                // Loopback only: other host names do not resolve, and other
                // IP literals go to a proxy nobody listens on (Chromium never
                // proxies loopback).
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
                "--proxy-server=http://127.0.0.1:9",
                "--no-first-run", "--disable-component-update",
            ]}});
            // Plain HTTP to chromedriver on loopback: no TLS feature needed.
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .unwrap_or_else(|e| panic!("no Chromium session: {e}\n{}", driver.log()));
            // chromedriver's page-load default is 300 s: fail a hung page sooner.
            let t = TimeoutConfiguration::new(Some(PAGE_TIMEOUT), Some(PAGE_TIMEOUT), None);
            client.update_timeouts(t).await.unwrap();
            return Browser {
                client,
                _driver: driver,
            };
        }
        panic!("chromedriver did not start on any of 3 ports");
    }

    pub async fn goto(&self, url: &str) {
        ok(self.client.goto(url).await, format_args!("goto {url}"));
    }

    /// Rendered text of the first match (WebDriver's "element text": what a
    /// user sees, so a hidden element gives "" and whitespace is collapsed).
    pub async fn text(&self, css: &str) -> String {
        ok(self.find(css).await.text().await, css)
    }

    /// Rendered text of every match, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.find_all(css).await {
            out.push(ok(e.text().await, css));
        }
        out
    }

    /// How many elements match now (no waiting: 0 is a valid answer).
    pub async fn count(&self, css: &str) -> usize {
        self.find_all(css).await.len()
    }

    /// Types `value` into an input or textarea (cleared first) as a user would;
    /// for a `<select>`, picks the option whose value is `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        if ok(e.tag_name().await, css).eq_ignore_ascii_case("select") {
            ok(
                e.select_by_value(value).await,
                format_args!("select {value} in {css}"),
            );
        } else {
            ok(e.clear().await, css);
            ok(e.send_keys(value).await, format_args!("type into {css}"));
        }
    }

    /// Clicks the first match like a user. When that is a link to another page
    /// or a form's submit button, waits (bounded) until the next page has
    /// loaded, so the next call sees it. Panics if no new page comes (a
    /// `required` field left empty blocks a submission, for one).
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        // Decided before the click, while the element exists. The marker lives
        // on this page's window, so it is gone once a new document replaces it.
        let js = "const el = arguments[0]; window.__berthOldPage = true;
            const a = el.closest('a[href]');
            if (a) return !a.getAttribute('href').startsWith('#') && a.target !== '_blank';
            const b = el.closest('button, input[type=submit], input[type=image]');
            return !!(b && b.form && b.type !== 'button' && b.type !== 'reset');";
        let navigates = ok(self.client.execute(js, vec![json!(e)]).await, css) == json!(true);
        ok(e.click().await, format_args!("click {css}"));
        let done = "return !window.__berthOldPage && document.readyState === 'complete';";
        let deadline = Instant::now() + PAGE_TIMEOUT;
        // Errors while the old document is torn down mean "not yet".
        while navigates
            && !matches!(
                self.client.execute(done, vec![]).await,
                Ok(Value::Bool(true))
            )
        {
            if Instant::now() > deadline {
                let at = self.current_path().await;
                panic!("click {css}: no new page loaded in {PAGE_TIMEOUT:?} (still at {at})");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Path and query of the current page: "/ui/repos" or "/ui/login?next=%2F".
    pub async fn current_path(&self) -> String {
        let url = ok(self.client.current_url().await, "current url");
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{query}", url.path())
    }

    /// The current DOM serialised (after scripts ran, not the bytes served).
    pub async fn page_source(&self) -> String {
        ok(self.client.source().await, "page source")
    }

    /// The cookie `name` as the browser holds it for the current page.
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        let all = ok(self.client.get_all_cookies().await, "cookies");
        all.into_iter().find(|c| c.name() == name)
    }

    /// Sets (or replaces) cookie `name` for the current page's host, path "/",
    /// SameSite=Lax: a forged or stale session, say. WebDriver only sets
    /// cookies for the current document, so open a page of that host first.
    pub async fn set_cookie_value(&self, name: &str, value: &str) {
        let url = ok(self.client.current_url().await, "current url");
        let _ = self.client.delete_cookie(name).await;
        // fantoccini sends a missing domain as null, which chromedriver
        // rejects, and a missing SameSite as "None"; its SameSite type is not
        // exported, hence the parsed template.
        let mut c = Cookie::parse("x=y; Path=/; SameSite=Lax").unwrap();
        c.set_name(name.to_string());
        c.set_value(value.to_string());
        c.set_domain(url.host_str().unwrap().to_string());
        ok(
            self.client.add_cookie(c).await,
            format_args!("set cookie {name}"),
        );
    }

    /// Deletes every cookie visible to the current page.
    pub async fn delete_cookies(&self) {
        ok(self.client.delete_all_cookies().await, "delete cookies");
    }

    /// Saves a PNG of the viewport (1280x757 here, not the whole page) as
    /// `<name>.png` in $BERTH_TEST_ARTIFACTS, else `<target>/ui-screenshots`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("BERTH_TEST_ARTIFACTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or("target".into());
                PathBuf::from(target).join("ui-screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let safe = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        let file: String = name
            .chars()
            .map(|c| if safe(c) { c } else { '_' })
            .collect();
        let path = dir.join(format!("{file}.png"));
        std::fs::write(&path, ok(self.client.screenshot().await, "screenshot")).unwrap();
        path
    }

    /// Runs `js` as a function body in the page and returns what it returns
    /// (write `return ...`).
    pub async fn eval(&self, js: &str) -> Value {
        ok(
            self.client.execute(js, vec![]).await,
            format_args!("eval {js}"),
        )
    }

    /// Whether a planted script ran: tests plant payloads that set
    /// `window.__xss` or call `alert()`, then assert this stays false. An open
    /// alert counts (and is dismissed so the session goes on).
    pub async fn xss_fired(&self) -> bool {
        if self.client.get_alert_text().await.is_ok() {
            let _ = self.client.dismiss_alert().await;
            return true;
        }
        match self
            .client
            .execute("return window.__xss !== undefined;", vec![])
            .await
        {
            Err(e) if e.is_unexpected_alert_open() => true,
            r => ok(r, "read window.__xss") == json!(true),
        }
    }

    /// Ends the session (chromedriver closes Chromium), then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    async fn find(&self, css: &str) -> Element {
        // A bounded wait rather than one lookup: tolerates a page still
        // settling, and the failure names the page it looked at.
        let wait = self.client.wait().at_most(PAGE_TIMEOUT).every(POLL);
        match wait.for_element(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no element {css} on {}: {e}", self.current_path().await),
        }
    }

    async fn find_all(&self, css: &str) -> Vec<Element> {
        ok(self.client.find_all(Locator::Css(css)).await, css)
    }
}

/// A WebDriver answer, or a panic that says what was being done.
fn ok<T>(r: Result<T, CmdError>, what: impl Display) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// chromedriver and the temp dir holding Chromium's profile, home and tmp.
struct Driver {
    child: Child,
    dir: tempfile::TempDir,
}

impl Driver {
    fn spawn(port: u16) -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("berth-chromium-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        // No --allowed-ips: with it chromedriver listens on every interface
        // (and filters peers); without it, on 127.0.0.1 and ::1 only.
        // Chromium keeps its disk cache and crash reports under $HOME (not the
        // profile), so parallel tests would share a cache, and its
        // shared-memory files under $TMPDIR outlive a kill: point both here.
        // Left in the test's process group, so Ctrl-C reaches it too.
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
        Driver { child, dir }
    }

    /// Polls GET /status until chromedriver says ready (true) or exits (false).
    async fn wait_ready(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        let req = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        while self.child.try_wait().unwrap().is_none() {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                // chromedriver says "Connection: close" but keeps the socket
                // open: look for the answer as it arrives, not at EOF.
                let read = async {
                    s.write_all(req).await?;
                    let (mut body, mut buf) = (Vec::new(), [0u8; 1024]);
                    while let n @ 1.. = s.read(&mut buf).await? {
                        body.extend_from_slice(&buf[..n]);
                        if String::from_utf8_lossy(&body).contains("\"ready\":true") {
                            return Ok(true);
                        }
                    }
                    std::io::Result::Ok(false)
                };
                if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), read).await {
                    return true;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "chromedriver not ready in {READY_TIMEOUT:?}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log"));
        format!("chromedriver log:\n{}", log.unwrap_or_default())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed chromedriver leaves its Chromium running, and Chromium's
        // crash handlers start sessions of their own; all of them name our
        // unique temp dir on their command line. Repeat until none is left, as
        // a dying browser may still be forking. (Zombies have no cmdline.)
        let marker = self.dir.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut found = false;
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    found = true;
                    // SAFETY: a plain kill(2) of a pid just read from /proc.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !found {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
