//! `loadtest auth`: what Basic authentication against an htpasswd file
//! (bcrypt) costs. Each registry runs twice on a filesystem root, without
//! auth and with `auth.htpasswd` (users hashed with bcrypt at `--cost`):
//!
//! - blob HEAD rate without auth, and with the same valid credentials on
//!   every request (Berth remembers a successful check for a while);
//! - the first request with a password not checked before (one uncached
//!   bcrypt) against a second one with the same password, per user;
//! - the worst case: a different wrong password on every request, at
//!   `--connections`, while `GET /` (no auth) and a HEAD with remembered
//!   credentials are measured beside it, each against its latency alone.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use http::{header, Method, StatusCode};

use crate::{
    compare::{keep, median},
    cpu,
    data::{hex, random_bytes},
    http::{basic_auth, drain, Client, ReqBody},
    progress::{count_bar, note, phase, spinner},
    report::{num, table},
    servers::{free_port, spawn_registry, RegistryKind, RegistryServer},
    setup,
    workloads::{self, LoadResult, LoadSpec},
    AuthArgs,
};

const MAIN_USER: &str = "loadtest";

struct Account {
    user: String,
    password: String,
}

/// Everything measured for one registry.
#[derive(Default)]
struct Figures {
    label: &'static str,
    head_open: Option<LoadResult>,
    head_auth: Option<LoadResult>,
    /// Per user: (first request, second request) in ms.
    first_second: Vec<(f64, f64)>,
    probe_alone: Option<(LoadResult, LoadResult)>,
    attack: Option<(LoadResult, LoadResult, LoadResult)>,
    threads_before: Option<u64>,
    threads_peak: Option<u64>,
}

pub(crate) fn config(root: &Path, addr: SocketAddr, htpasswd: Option<&Path>) -> String {
    let mut c = format!(
        "version: 0.1\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  secret: loadtest-secret\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n",
        root.display()
    );
    if let Some(p) = htpasswd {
        let _ = write!(
            c,
            // Berth throttles a client's failed logins: off, so the wrong-password
            // load measures bcrypt (distribution ignores the key).
            "auth:\n  htpasswd:\n    realm: loadtest\n    path: {}\n    throttle:\n      maxfailures: 0\n",
            p.display()
        );
    }
    c
}

/// A registry in `<dir>/<name>` on a fresh filesystem root, with htpasswd if given.
pub(crate) async fn start(
    kind: RegistryKind,
    bin: &Path,
    dir: &Path,
    name: &str,
    htpasswd: Option<&Path>,
) -> Result<RegistryServer> {
    let dir = dir.join(name);
    let root = dir.join("root");
    fs::create_dir_all(&root)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    spawn_registry(kind, bin, &dir, &config(&root, addr, htpasswd), addr, root).await
}

/// `Threads:` of a process.
fn threads(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One request on a fresh connection; its latency in ms.
async fn timed_head(addr: SocketAddr, c: &mut Client, path: &str) -> Result<f64> {
    let t = Instant::now();
    let resp = c.send(Method::HEAD, path, &[], ReqBody::Empty).await?;
    let status = resp.status();
    drain(resp, None).await?;
    if status != StatusCode::OK {
        bail!("HEAD {path} on {addr}: {status}");
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

struct Timing {
    connections: usize,
    probes: usize,
    warmup: Duration,
    duration: Duration,
}

async fn run_loads(
    label: &str,
    what: &str,
    specs: &[(SocketAddr, LoadSpec)],
    watch_pid: Option<u32>,
    notes: &mut Vec<String>,
) -> Option<(Vec<LoadResult>, Option<u64>)> {
    let total = specs
        .iter()
        .map(|(_, s)| (s.warmup + s.duration).as_millis() as u64)
        .max()
        .unwrap_or(0);
    let pb = count_bar(total, format!("{label}: {what} (ms)"));
    let end = Instant::now() + Duration::from_millis(total);
    let sampler = async {
        let mut peak = None;
        // Bounded by the load's deadline.
        while Instant::now() < end {
            if let Some(n) = watch_pid.and_then(threads) {
                peak = Some(peak.map_or(n, |p: u64| p.max(n)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    };
    let (r, peak) = tokio::join!(workloads::load_many(specs, &pb), sampler);
    pb.finish_and_clear();
    keep(notes, &format!("{label} {what}"), r).map(|r| (r, peak))
}

fn describe(l: &LoadResult) -> String {
    format!(
        "{:.0} req/s ({} requests), p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors",
        l.rps, l.requests, l.p50_ms, l.p99_ms, l.max_ms, l.errors
    )
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    label: &'static str,
    open: &RegistryServer,
    authed: &RegistryServer,
    main: &Account,
    users: &[Account],
    t: &Timing,
    notes: &mut Vec<String>,
) -> Figures {
    let mut fig = Figures {
        label,
        ..Default::default()
    };
    let main_auth = basic_auth(&main.user, &main.password);
    let spec =
        |path: &str, conns: usize| LoadSpec::new(Method::HEAD, path, conns, t.warmup, t.duration);

    // Without auth.
    let setup = workloads::setup_manifest(open.addr, "loadtest/app", None).await;
    if let Some(target) = keep(notes, &format!("{label} (no auth) setup"), setup) {
        let s = [(open.addr, spec(&target.blob_path, t.connections))];
        if let Some((r, _)) = run_loads(label, "blob HEAD, no auth", &s, None, notes).await {
            note(format!("{label}: blob HEAD, no auth: {}", describe(&r[0])));
            fig.head_open = Some(r[0]);
        }
    }

    // With auth: the same credentials on every request.
    let setup = workloads::setup_manifest(authed.addr, "loadtest/app", Some(&main_auth)).await;
    let Some(target) = keep(notes, &format!("{label} (htpasswd) setup"), setup) else {
        return fig;
    };
    let path = target.blob_path;
    let s = [(
        authed.addr,
        spec(&path, t.connections).header(header::AUTHORIZATION, main_auth.clone()),
    )];
    if let Some((r, _)) = run_loads(label, "blob HEAD, Basic auth", &s, None, notes).await {
        note(format!(
            "{label}: blob HEAD, Basic auth: {}",
            describe(&r[0])
        ));
        fig.head_auth = Some(r[0]);
    }

    // One uncached check per user: first request, then a second one.
    let sp = spinner(format!("{label}: first and second request per user"));
    for u in users {
        let mut c = Client::new(authed.addr).with_auth(Some(&basic_auth(&u.user, &u.password)));
        let r = async {
            let first = timed_head(authed.addr, &mut c, &path).await?;
            let second = timed_head(authed.addr, &mut c, &path).await?;
            anyhow::Ok((first, second))
        }
        .await;
        if let Some(fs) = keep(notes, &format!("{label} first/second request"), r) {
            fig.first_second.push(fs);
        }
    }
    sp.finish_and_clear();
    if !fig.first_second.is_empty() {
        note(format!(
            "{label}: first request with a new password / second (ms): {}",
            fig.first_second
                .iter()
                .map(|(a, b)| format!("{a:.1}/{b:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // The probes: GET / without credentials, and HEAD with remembered ones.
    let root_status = async {
        let mut c = Client::new(authed.addr);
        let resp = c.send(Method::GET, "/", &[], ReqBody::Empty).await?;
        let st = resp.status();
        drain(resp, None).await?;
        anyhow::Ok(st)
    }
    .await;
    let Some(root_status) = keep(notes, &format!("{label} GET /"), root_status) else {
        return fig;
    };
    if root_status == StatusCode::UNAUTHORIZED {
        notes.push(format!("{label}: GET / asks for credentials"));
    }
    let probes = |a: SocketAddr| {
        [
            (
                a,
                LoadSpec::new(Method::GET, "/", t.probes, t.warmup, t.duration).expect(root_status),
            ),
            (
                a,
                spec(&path, t.probes).header(header::AUTHORIZATION, main_auth.clone()),
            ),
        ]
    };
    if let Some((r, _)) = run_loads(label, "probes alone", &probes(authed.addr), None, notes).await
    {
        note(format!(
            "{label}: alone: GET / {}; HEAD remembered {}",
            describe(&r[0]),
            describe(&r[1])
        ));
        fig.probe_alone = Some((r[0], r[1]));
    }

    // A different wrong password on every request, beside the probes.
    fig.threads_before = threads(authed.proc.pid());
    let mut specs = vec![(
        authed.addr,
        spec(&path, t.connections).wrong_passwords(MAIN_USER),
    )];
    specs.extend(probes(authed.addr));
    let pid = Some(authed.proc.pid());
    if let Some((r, peak)) = run_loads(label, "wrong passwords + probes", &specs, pid, notes).await
    {
        note(format!(
            "{label}: wrong passwords {}; GET / {}; HEAD remembered {}; threads {} -> {}",
            describe(&r[0]),
            describe(&r[1]),
            describe(&r[2]),
            fig.threads_before.map_or("-".into(), |n| n.to_string()),
            peak.map_or("-".into(), |n| n.to_string()),
        ));
        fig.attack = Some((r[0], r[1], r[2]));
        fig.threads_peak = peak;
    }
    fig
}

fn render(figs: &[Figures], t: &Timing, cost: u32, bcrypt_ms: f64, users: usize) -> String {
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("metric".to_string())
        .chain(figs.iter().map(|f| f.label.to_string()))
        .collect()];
    let mut row = |name: String, f: &dyn Fn(&Figures) -> String| {
        rows.push(std::iter::once(name).chain(figs.iter().map(f)).collect());
    };
    let rps = |l: Option<LoadResult>| num(l.map(|l| l.rps));
    let lat = |l: Option<LoadResult>| {
        l.map_or("-".into(), |l| {
            format!("{:.1}/{:.1}/{:.0}", l.p50_ms, l.p99_ms, l.max_ms)
        })
    };
    let c = t.connections;
    let p = t.probes;
    row(format!("blob HEAD c={c}, no auth (req/s)"), &|f| {
        rps(f.head_open)
    });
    row(
        format!("blob HEAD c={c}, Basic, same password (req/s)"),
        &|f| rps(f.head_auth),
    );
    row(
        "  ratio to no auth".into(),
        &|f| match (f.head_auth, f.head_open) {
            (Some(a), Some(o)) if o.rps > 0.0 => format!("{:.2}x", a.rps / o.rps),
            _ => "-".into(),
        },
    );
    row("  p50/p99/max (ms)".into(), &|f| lat(f.head_auth));
    row(
        format!("first request, new password (ms, median of {users})"),
        &|f| num(median(f.first_second.iter().map(|x| x.0).collect())),
    );
    row("second request, same password (ms)".into(), &|f| {
        num(median(f.first_second.iter().map(|x| x.1).collect()))
    });
    row(
        format!("wrong password every request, c={c} (req/s)"),
        &|f| rps(f.attack.map(|a| a.0)),
    );
    row("  p50/p99/max (ms)".into(), &|f| lat(f.attack.map(|a| a.0)));
    row("  process threads before -> peak".into(), &|f| {
        format!(
            "{} -> {}",
            f.threads_before.map_or("-".into(), |n| n.to_string()),
            f.threads_peak.map_or("-".into(), |n| n.to_string())
        )
    });
    row(
        format!("GET / (no auth) c={p} alone p50/p99/max (ms)"),
        &|f| lat(f.probe_alone.map(|a| a.0)),
    );
    row(
        format!("GET / (no auth) c={p} during wrong passwords p50/p99/max (ms)"),
        &|f| lat(f.attack.map(|a| a.1)),
    );
    row("  GET / req/s alone -> during".into(), &|f| {
        format!(
            "{} -> {}",
            rps(f.probe_alone.map(|a| a.0)),
            rps(f.attack.map(|a| a.1))
        )
    });
    row(
        format!("HEAD, remembered password c={p} alone p50/p99/max (ms)"),
        &|f| lat(f.probe_alone.map(|a| a.1)),
    );
    row(
        format!("HEAD, remembered password c={p} during wrong passwords p50/p99/max (ms)"),
        &|f| lat(f.attack.map(|a| a.2)),
    );
    row("  HEAD remembered req/s alone -> during".into(), &|f| {
        format!(
            "{} -> {}",
            rps(f.probe_alone.map(|a| a.1)),
            rps(f.attack.map(|a| a.2))
        )
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nBasic authentication (htpasswd, bcrypt cost {cost}; load phases {:.0} s; \
         one bcrypt verification in this process, one core: {bcrypt_ms:.1} ms)",
        t.duration.as_secs_f64()
    );
    out.push_str(&table(&rows));
    out
}

pub async fn run(args: AuthArgs) -> Result<String> {
    let c = &args.common;
    let q = c.quick;
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if q { 3.0 } else { 10.0 }));
    if duration.is_zero() || duration > Duration::from_secs(600) {
        bail!("--duration must be in (0, 600] seconds");
    }
    if args.connections == 0 || args.connections > 4096 || args.probe_connections == 0 {
        bail!("--connections must be in 1..=4096 and --probe-connections at least 1");
    }
    if !(4..=16).contains(&args.cost) {
        bail!("--cost must be in 4..=16");
    }
    let n_users = args.users.unwrap_or(if q { 3 } else { 5 }).clamp(1, 100);
    let t = Timing {
        connections: args.connections,
        probes: args.probe_connections,
        warmup: (duration / 5).min(Duration::from_secs(1)),
        duration,
    };
    let berth = setup::binaries(&c.bins, c.berth_only).await?;
    let cpu_start = cpu::snapshot();
    let started = Instant::now();
    let mut notes = Vec::new();
    let tmp = setup::work_dir("loadtest-auth-", c.workdir.as_deref())?;
    let dir = tmp.path().to_path_buf();

    phase(&format!(
        "htpasswd: {} users, bcrypt cost {}",
        n_users + 1,
        args.cost
    ));
    let account = |user: String, seed: u64| Account {
        user,
        password: hex(&random_bytes(seed, 12)),
    };
    let main = account(MAIN_USER.into(), 1);
    let users: Vec<Account> = (1..=n_users)
        .map(|i| account(format!("user{i}"), 100 + i as u64))
        .collect();
    let sp = spinner("hashing passwords");
    let mut file = String::new();
    for a in std::iter::once(&main).chain(&users) {
        let h = bcrypt::hash_with_result(&a.password, args.cost)?
            .format_for_version(bcrypt::Version::TwoY);
        let _ = writeln!(file, "{}:{h}", a.user);
    }
    sp.finish_and_clear();
    let htpasswd = dir.join("htpasswd");
    fs::write(&htpasswd, file)?;
    // The reference: one verification here (the client's core, idle servers).
    let probe_hash = bcrypt::hash("reference", args.cost)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let _ = bcrypt::verify("reference", &probe_hash);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let bcrypt_ms = median(times).unwrap_or(0.0);
    note(format!(
        "bcrypt verify, cost {}, in this process: {bcrypt_ms:.1} ms",
        args.cost
    ));

    let kinds = setup::registries(&berth, &c.bins, c.berth_only);
    let mut figs = Vec::new();
    for (kind, bin) in kinds {
        let label = kind.label();
        phase(label);
        let r = async {
            let open = start(kind, bin, &dir, &format!("{label}-open"), None).await?;
            let authed = start(kind, bin, &dir, &format!("{label}-auth"), Some(&htpasswd)).await?;
            anyhow::Ok((open, authed))
        }
        .await;
        let Some((open, mut authed)) = keep(&mut notes, &format!("{label} start"), r) else {
            continue;
        };
        note(format!(
            "{label}: no auth on {} (pid {}), htpasswd on {} (pid {})",
            open.addr,
            open.proc.pid(),
            authed.addr,
            authed.proc.pid()
        ));
        figs.push(measure(label, &open, &authed, &main, &users, &t, &mut notes).await);
        if let Err(e) = authed.proc.check_running() {
            notes.push(format!("{label}: {e:#}"));
        }
    }
    if c.keep {
        let kept = tmp.keep();
        notes.push(format!("work directory kept: {}", kept.display()));
    } else {
        drop(tmp);
    }
    notes.push(cpu::summary(
        &cpu_start,
        &cpu::snapshot(),
        started.elapsed().as_secs_f64(),
    ));
    let mut out = render(&figs, &t, args.cost, bcrypt_ms, n_users);
    let _ = writeln!(out, "\nNotes");
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    Ok(out)
}
