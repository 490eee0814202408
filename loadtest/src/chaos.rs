//! `loadtest chaos`: a bounded chaos run. Three Berth replicas behind nginx
//! (round-robin) on Garage with Redis; `--clients` CI-style clients push
//! small images (a shared base layer, one or two of their own, a config; by
//! POST+PATCH+PUT, POST+PUT, single POST or mount), tag them, sometimes
//! move a tag, and pull earlier images, for `--duration`. Meanwhile a
//! replica is SIGKILLed and started again every `--kill-every` (in turn),
//! Redis is SIGKILLed and started empty once, and `berth garbage-collect`
//! runs once in the middle. Clients retry as docker does. At the end, with
//! every process up, every acknowledged manifest PUT is pulled once more,
//! every blob hashed. Printed: images acknowledged and lost, wrong bytes
//! read, client-visible errors per kind, faults done; PASS/FAIL lines.

use std::{
    cell::RefCell,
    fmt::Write as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use indicatif::ProgressBar;
use tokio::task::{spawn_local, JoinHandle, LocalSet};

use crate::{
    chaos_client::{check, client, Shared, ATTEMPTS},
    chaos_plan::{schedule, Fault, Tally, REPLICAS},
    deploy::{deploy, DeploySpec},
    progress::{note, phase, spinner},
    regclient::Endpoint,
    report::{table, target_line},
    servers::{clean_registry_env, run as run_cmd, RegistryKind},
    setup,
    stores::{find_garage, S3Store, StoreKind},
    ChaosArgs,
};

/// How long a killed replica stays down before it is started again.
const DOWNTIME: Duration = Duration::from_secs(1);
/// The collector's grace period: short, so a minute's run has blobs old
/// enough to sweep (cancelled jobs' layers); Berth warns about it.
const GC_GRACE: &str = "10s";
/// A collector run that stopped (it refuses to go on when, say, Redis does
/// not answer a cache clear in time) is run again, as a CronJob would.
const GC_ATTEMPTS: usize = 3;
const GC_TIMEOUT: Duration = Duration::from_secs(300);

struct Settings {
    duration: Duration,
    kill_every: Duration,
    clients: usize,
}

impl Settings {
    fn from(a: &ChaosArgs) -> Settings {
        let secs = a.duration.unwrap_or(if a.quick { 60.0 } else { 180.0 });
        Settings {
            duration: Duration::from_secs_f64(secs),
            kill_every: Duration::from_secs_f64(a.kill_every),
            clients: a.clients.max(1),
        }
    }
}

/// What the collector did: its summary line, or why each run failed.
#[derive(Default)]
struct Collected {
    summary: Option<String>,
    failed: Vec<String>,
}

/// `berth garbage-collect --config <config> --grace-period 10s`, run
/// again if it fails, up to [`GC_ATTEMPTS`] times.
async fn collect(berth: PathBuf, config: PathBuf) -> Collected {
    let mut out = Collected::default();
    for _ in 0..GC_ATTEMPTS {
        let mut cmd = tokio::process::Command::new(&berth);
        cmd.arg("garbage-collect")
            .arg("--config")
            .arg(&config)
            .args(["--grace-period", GC_GRACE]);
        clean_registry_env(cmd.as_std_mut());
        match run_cmd(cmd, GC_TIMEOUT).await {
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout);
                out.summary = Some(stdout.lines().last().unwrap_or("").trim().to_string());
                return out;
            }
            Err(e) => {
                let text = format!("{e:#}");
                out.failed
                    .push(text.lines().last().unwrap_or("").trim().to_string());
            }
        }
    }
    out
}

/// The faults done, for the summary.
#[derive(Default)]
struct Done {
    kills: usize,
    planned_kills: usize,
    redis: usize,
    collected: Collected,
}

/// Sleep until `deadline`, refreshing the spinner's line each second.
async fn wait_until(deadline: Instant, start: Instant, pb: &ProgressBar, tally: &RefCell<Tally>) {
    // Bounded: each pass sleeps until the deadline or a second.
    while Instant::now() < deadline {
        pb.set_message({
            let t = tally.borrow();
            format!(
                "chaos {:.0} s: {} jobs, {} errors, {} pulls",
                start.elapsed().as_secs_f64(),
                t.jobs,
                t.total_errors(),
                t.pulls
            )
        });
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

pub async fn run(args: ChaosArgs) -> Result<(String, bool)> {
    let s = Settings::from(&args);
    let berth = setup::binaries(&args.bins, true).await?;
    let garage = match &args.garage {
        Some(g) => g.clone(),
        None => find_garage().context("garage not found (tests/run.sh builds it)")?,
    };
    let tmp = setup::work_dir("loadtest-chaos-", args.workdir.as_deref())?;
    let result = LocalSet::new()
        .run_until(run_in(&s, &berth, &garage, tmp.path()))
        .await;
    let mut notes = Vec::new();
    setup::finish_work_dir(tmp, args.keep, &mut notes);
    let (mut text, ok) = result?;
    for n in notes {
        let _ = write!(text, "\n{n}");
    }
    Ok((text, ok))
}

async fn run_in(s: &Settings, berth: &Path, garage: &Path, dir: &Path) -> Result<(String, bool)> {
    phase("starting Garage, Redis, 3 Berth replicas and nginx");
    let store = S3Store::start(StoreKind::Garage, Some(garage), dir).await?;
    let spec = DeploySpec::new(RegistryKind::Berth, REPLICAS, true, false);
    let mut dep = deploy(spec, berth, dir, &store.endpoint(), "chaos").await?;
    let gc_config = dir.join("gc-config.yml");
    std::fs::write(&gc_config, dep.config(0))?;
    let endpoint = Endpoint {
        addr: dep.addr,
        authority: dep.addr.to_string(),
    };
    let shared = Rc::new(Shared::new(endpoint));
    let tally = Rc::new(RefCell::new(Tally::default()));

    phase(&format!(
        "{} clients for {:.0} s; a replica killed every {:.0} s, Redis once, the collector once",
        s.clients,
        s.duration.as_secs_f64(),
        s.kill_every.as_secs_f64()
    ));
    let clients: Vec<JoinHandle<Result<()>>> = (0..s.clients)
        .map(|n| spawn_local(client(shared.clone(), tally.clone(), n)))
        .collect();
    let faults = schedule(s.duration, s.kill_every, REPLICAS);
    let mut done = Done {
        planned_kills: faults
            .iter()
            .filter(|(_, f)| matches!(f, Fault::Kill(_)))
            .count(),
        ..Done::default()
    };
    let mut gc = None;
    let start = Instant::now();
    let pb = spinner("chaos");
    for (at, fault) in faults {
        wait_until(start + at, start, &pb, &tally).await;
        let t = start.elapsed().as_secs_f64();
        match fault {
            Fault::Kill(i) => {
                dep.kill(i);
                tokio::time::sleep(DOWNTIME).await;
                dep.start_again(i).await?;
                done.kills += 1;
                let up = start.elapsed().as_secs_f64() - t;
                pb.suspend(|| {
                    note(format!(
                        "{t:.0} s: replica {i} killed, up again in {up:.1} s"
                    ))
                });
            }
            Fault::Redis => {
                dep.restart_redis().await?;
                done.redis += 1;
                pb.suspend(|| note(format!("{t:.0} s: Redis killed and started empty")));
            }
            Fault::Collect => {
                gc = Some(spawn_local(collect(berth.to_path_buf(), gc_config.clone())));
                pb.suspend(|| note(format!("{t:.0} s: garbage-collect started")));
            }
        }
    }
    wait_until(start + s.duration, start, &pb, &tally).await;
    shared.stop.set(true);
    pb.set_message("the clients finish their jobs");
    for c in clients {
        c.await??;
    }
    if let Some(gc) = gc {
        pb.set_message("the collector finishes");
        done.collected = gc.await?;
    }
    pb.finish_and_clear();
    // The final check runs with every process up.
    dep.check_running()?;

    phase("every acknowledged image, pulled once more");
    let checks = Rc::new(shared.ledger.borrow().final_checks());
    let final_tally = Rc::new(RefCell::new(Tally::default()));
    let sp = spinner(format!("pulling {} acknowledged tags", checks.len()));
    let checkers: Vec<_> = (0..s.clients)
        .map(|k| {
            let (sh, t, c) = (shared.clone(), final_tally.clone(), checks.clone());
            spawn_local(check(sh, t, c, k, s.clients))
        })
        .collect();
    let mut lost = Vec::new();
    for c in checkers {
        lost.extend(c.await??);
    }
    sp.finish_and_clear();
    let by_digest = checks.iter().filter(|(i, r)| *r == i.digest).count();
    let run = tally.borrow();
    let fin = final_tally.borrow();
    let ledger = shared.ledger.borrow();
    let wrong: Vec<&String> = run.wrong.iter().chain(&fin.wrong).collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "chaos: {} on Garage behind nginx, {} clients, {:.0} s, a replica SIGKILLed every {:.0} s",
        dep.label,
        s.clients,
        s.duration.as_secs_f64(),
        s.kill_every.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "faults: {} replica kills (of {} planned), Redis restarted {} time(s)",
        done.kills, done.planned_kills, done.redis
    );
    let gc = &done.collected;
    let _ = match &gc.summary {
        Some(line) => writeln!(out, "{line} (after {} failed runs)", gc.failed.len()),
        None => writeln!(out, "garbage-collect failed {} times", gc.failed.len()),
    };
    for f in &gc.failed {
        let _ = writeln!(out, "  garbage-collect failure: {f}");
    }
    let _ = writeln!(
        out,
        "jobs: {} ({} cancelled after their layers), {} pulls during the run, \
         {} steps given up after {ATTEMPTS} tries",
        run.jobs, run.cancelled, run.pulls, run.abandoned
    );
    let ways: Vec<String> = run.blobs.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let _ = writeln!(out, "blobs: {}", ways.join(", "));
    let _ = writeln!(
        out,
        "images acknowledged: {} ({} manifest PUTs acknowledged; at the end {} checked by tag, \
         {by_digest} by digest as their tag moved)",
        ledger.images(),
        ledger.acked(),
        checks.len() - by_digest
    );
    let _ = writeln!(
        out,
        "lost: {}; wrong bytes read: {}",
        lost.len(),
        wrong.len()
    );
    for l in lost.iter().take(10) {
        let _ = writeln!(out, "  lost: {l}");
    }
    for w in wrong.iter().take(10) {
        let _ = writeln!(out, "  wrong bytes: {w}");
    }
    let _ = writeln!(
        out,
        "client-visible errors by kind ({} during the run, {} in the final check):",
        run.total_errors(),
        fin.total_errors()
    );
    let mut rows = vec![vec!["kind".to_string(), "run".into(), "final check".into()]];
    let mut kinds: Vec<&String> = run.errors.keys().chain(fin.errors.keys()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let n = |t: &Tally| t.errors.get(k).copied().unwrap_or(0).to_string();
        rows.push(vec![k.clone(), n(&run), n(&fin)]);
    }
    if rows.len() == 1 {
        out.push_str("  (none)\n");
    } else {
        out.push_str(&table(&rows));
    }
    let targets = [
        target_line(
            "acknowledged images lost",
            Some(lost.len() as f64),
            Some(0.0),
            "images",
            format!(
                "{} acknowledged manifest PUTs, each pulled at the end, every blob hashed",
                ledger.acked()
            ),
            true,
        ),
        target_line(
            "wrong bytes served",
            Some(wrong.len() as f64),
            Some(0.0),
            "reads",
            "a 200 whose bytes do not hash to the digest asked for, during the run or after".into(),
            true,
        ),
    ];
    let ok = targets.iter().all(|l| l.starts_with("PASS")) && gc.summary.is_some();
    for t in targets {
        let _ = writeln!(out, "{t}");
    }
    Ok((out.trim_end().to_string(), ok))
}
