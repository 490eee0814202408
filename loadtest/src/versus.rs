//! `loadtest versus`: Berth and Debian's docker-registry (distribution 2.8.2)
//! started side by side with the same configs (filesystem roots in a temp
//! directory; a second instance of each with htpasswd for mixed-auth), every
//! scenario run against one then the other, one table with both figures and
//! the ratio, and a PNG bar chart of the ratios.

use std::{fmt::Write as _, fs, path::PathBuf, rc::Rc};

use anyhow::{bail, Result};

use crate::{
    authbench, chart,
    compare::keep,
    cpu,
    data::{hex, random_bytes, PATTERN_LEN},
    opstats::{mb, OpSummary, ScenarioResult},
    progress::{note, phase, spinner},
    regclient::{Credentials, Endpoint},
    report::{num, table},
    scenarios::{self, Ctx, Plan, Scenario},
    servers::{RegistryKind, RegistryServer},
    setup, VersusArgs,
};

const USER: &str = "loadtest";

/// One line of the comparison: an operation (or a scenario's total, op
/// "all") with each registry's figures.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub op: String,
    pub berth: Option<OpSummary>,
    pub dist: Option<OpSummary>,
}

/// Berth / distribution, if both are there and the divisor is not zero.
pub fn ratio(b: Option<f64>, d: Option<f64>) -> Option<f64> {
    match (b, d) {
        (Some(b), Some(d)) if d > 0.0 => Some(b / d),
        _ => None,
    }
}

fn total(r: &ScenarioResult) -> OpSummary {
    let lat = |f: fn(&OpSummary) -> f64| r.ops.iter().map(f).fold(0.0, f64::max);
    OpSummary {
        op: "all".into(),
        count: r.ops.iter().map(|o| o.count).sum(),
        errors: r.errors(),
        ops_per_s: r.ops_per_s(),
        mb_per_s: r.mb_per_s(),
        // The slowest operation's figures: a scenario has no single latency.
        p50_ms: lat(|o| o.p50_ms),
        p90_ms: lat(|o| o.p90_ms),
        p99_ms: lat(|o| o.p99_ms),
        max_ms: lat(|o| o.max_ms),
        first_error: None,
    }
}

/// Rows for one scenario: each operation either registry performed (in
/// Berth's order, then distribution's extras), then the total.
pub fn rows_for(
    scenario: &str,
    b: Option<&ScenarioResult>,
    d: Option<&ScenarioResult>,
) -> Vec<Row> {
    let mut ops: Vec<String> = Vec::new();
    for r in b.iter().chain(d.iter()) {
        for o in &r.ops {
            if !ops.contains(&o.op) {
                ops.push(o.op.clone());
            }
        }
    }
    let mut rows: Vec<Row> = ops
        .into_iter()
        .map(|op| Row {
            scenario: scenario.to_string(),
            berth: b.and_then(|r| r.op(&op).cloned()),
            dist: d.and_then(|r| r.op(&op).cloned()),
            op,
        })
        .collect();
    rows.push(Row {
        scenario: scenario.to_string(),
        op: "all".into(),
        berth: b.map(total),
        dist: d.map(total),
    });
    rows
}

fn lat(o: Option<&OpSummary>) -> String {
    o.map_or("-".into(), |o| {
        format!("{}/{}", num(Some(o.p50_ms)), num(Some(o.p99_ms)))
    })
}

/// The side-by-side table.
pub fn render_table(rows: &[Row]) -> String {
    let mut t: Vec<Vec<String>> = vec![[
        "scenario / operation",
        "berth ops/s",
        "dist ops/s",
        "ratio",
        "berth MB/s",
        "dist MB/s",
        "ratio",
        "berth p50/p99 ms",
        "dist p50/p99 ms",
        "errors b/d",
    ]
    .map(String::from)
    .to_vec()];
    let mut last = "";
    for r in rows {
        if r.scenario != last {
            t.push(vec![r.scenario.clone()]);
            last = &r.scenario;
        }
        let (b, d) = (r.berth.as_ref(), r.dist.as_ref());
        let ops = |o: Option<&OpSummary>| o.map(|o| o.ops_per_s);
        let mbs = |o: Option<&OpSummary>| o.map(|o| o.mb_per_s).filter(|v| *v > 0.0);
        let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
        let errs = |o: Option<&OpSummary>| o.map_or("-".into(), |o| o.errors.to_string());
        t.push(vec![
            format!("  {}", r.op),
            num(ops(b)),
            num(ops(d)),
            x(ratio(ops(b), ops(d))),
            mb(mbs(b).unwrap_or(0.0)),
            mb(mbs(d).unwrap_or(0.0)),
            x(ratio(mbs(b), mbs(d))),
            lat(b),
            lat(d),
            format!("{}/{}", errs(b), errs(d)),
        ]);
    }
    table(&t)
}

/// Within 10% of each other.
fn near(a: f64, b: f64) -> bool {
    (a / b - 1.0).abs() <= 0.10
}

/// The chart's bars: each scenario's total, and the operations whose ratio
/// differs from their scenario's by more than 10% (the others run in
/// lockstep with it: one client does them one after another), where both
/// registries have figures.
pub fn bars(rows: &[Row]) -> Vec<chart::Bar> {
    let rate = |r: &Row| {
        ratio(
            r.berth.as_ref().map(|o| o.ops_per_s),
            r.dist.as_ref().map(|o| o.ops_per_s),
        )
    };
    let mut out = Vec::new();
    let mut i = 0;
    // Bounded: each pass consumes one scenario's rows.
    while i < rows.len() {
        let scenario = &rows[i].scenario;
        let n = rows[i..]
            .iter()
            .take_while(|r| &r.scenario == scenario)
            .count();
        let group = &rows[i..i + n];
        i += n;
        let Some(all) = group.iter().find(|r| r.op == "all").and_then(rate) else {
            continue;
        };
        out.push(chart::Bar {
            label: format!("{scenario} (all operations)"),
            ratio: all,
        });
        // Operations off the total, one bar per distinct ratio: the first
        // operation names it, "+N" counts the others in step with it.
        let mut extra: Vec<(String, f64, usize)> = Vec::new();
        for r in group.iter().filter(|r| r.op != "all") {
            let Some(v) = rate(r).filter(|v| !near(*v, all)) else {
                continue;
            };
            match extra.iter_mut().find(|(_, x, _)| near(v, *x)) {
                Some((_, _, more)) => *more += 1,
                None => extra.push((r.op.clone(), v, 0)),
            }
        }
        for (op, v, more) in extra {
            let also = if more > 0 {
                format!(" (+{more} in step)")
            } else {
                String::new()
            };
            out.push(chart::Bar {
                label: format!("{scenario}: {op}{also}"),
                ratio: v,
            });
        }
    }
    out
}

struct Pair {
    kind: RegistryKind,
    open: RegistryServer,
    authed: RegistryServer,
}

pub async fn run(args: VersusArgs) -> Result<(String, bool)> {
    let c = &args.common;
    let plan = Plan::new(
        c.quick,
        args.load.clients,
        args.load.duration,
        args.load.large_layer,
    )?;
    if !(4..=16).contains(&args.cost) {
        bail!("--cost must be in 4..=16");
    }
    let list = Scenario::expand(&args.scenario);
    let berth = setup::binaries(&c.bins, c.berth_only).await?;
    let cpu_start = cpu::snapshot();
    let started = std::time::Instant::now();
    let tmp = setup::work_dir("loadtest-versus-", c.workdir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    let password = hex(&random_bytes(99, 12));
    let hash =
        bcrypt::hash_with_result(&password, args.cost)?.format_for_version(bcrypt::Version::TwoY);
    let htpasswd = dir.join("htpasswd");
    fs::write(&htpasswd, format!("{USER}:{hash}\n"))?;

    let kinds = setup::registries(&berth, &c.bins, c.berth_only);
    let mut pairs = Vec::new();
    for (kind, bin) in kinds {
        let label = kind.label();
        let sp = spinner(format!("starting {label}"));
        let open = authbench::start(kind, bin, &dir, &format!("{label}-open"), None).await;
        let authed =
            authbench::start(kind, bin, &dir, &format!("{label}-auth"), Some(&htpasswd)).await;
        sp.finish_and_clear();
        let (open, authed) = (open?, authed?);
        note(format!(
            "{label}: open on {} (pid {}), htpasswd on {} (pid {})",
            open.addr,
            open.proc.pid(),
            authed.addr,
            authed.proc.pid()
        ));
        pairs.push(Pair { kind, open, authed });
    }

    let pattern = random_bytes(1, PATTERN_LEN);
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let mut clean = true;
    for sc in &list {
        phase(sc.name());
        let mut results: Vec<Option<ScenarioResult>> = Vec::new();
        for p in pairs.iter_mut() {
            let label = p.kind.label();
            let (server, creds) = match sc {
                Scenario::MixedAuth => (
                    &p.authed,
                    Credentials {
                        user: Some(USER.into()),
                        password: Some(password.clone()),
                        token_url: None,
                    },
                ),
                _ => (&p.open, Credentials::anonymous()),
            };
            let endpoint = Endpoint {
                addr: server.addr,
                authority: server.addr.to_string(),
            };
            let ctx = Ctx::new(endpoint, Rc::new(creds), plan.clone(), pattern.clone());
            let ctx = Rc::new(ctx);
            let r = scenarios::run(*sc, ctx, label).await;
            let r = keep(&mut notes, &format!("{label} {}", sc.name()), r);
            if let Some(r) = &r {
                note(format!(
                    "{label}: {} {:.0} ops/s, {:.1} MB/s, {} errors",
                    sc.name(),
                    r.ops_per_s(),
                    r.mb_per_s(),
                    r.errors()
                ));
                for o in r.ops.iter().filter(|o| o.errors > 0) {
                    notes.push(format!(
                        "{label} {} {}: {} errors, first: {}",
                        sc.name(),
                        o.op,
                        o.errors,
                        o.first_error.as_deref().unwrap_or("?")
                    ));
                }
            }
            clean &= r.as_ref().is_some_and(|r| r.errors() == 0);
            results.push(r);
            for s in [&mut p.open, &mut p.authed] {
                if let Err(e) = s.proc.check_running() {
                    notes.push(format!("{label}: {e:#}"));
                    clean = false;
                }
            }
        }
        rows.extend(rows_for(
            sc.name(),
            results[0].as_ref(),
            results.get(1).and_then(|r| r.as_ref()),
        ));
    }
    drop(pairs);
    if c.keep {
        notes.push(format!("work directory kept: {}", tmp.keep().display()));
    }
    notes.push(cpu::summary(
        &cpu_start,
        &cpu::snapshot(),
        started.elapsed().as_secs_f64(),
    ));

    let mut out = format!(
        "\nBerth vs distribution 2.8.2: {} clients ({} for large-layer), {:.0} s per scenario, \
         ratio = berth/distribution (MB = 10^6 bytes; p50/p99 of \"all\" = the slowest operation's)\n",
        plan.clients,
        plan.large_clients,
        plan.duration.as_secs_f64()
    );
    out.push_str(&render_table(&rows));
    let bars = bars(&rows);
    if !bars.is_empty() {
        let png: PathBuf = args.png.clone();
        let title = format!(
            "Berth / distribution 2.8.2, {} clients, {:.0} s per scenario",
            plan.clients,
            plan.duration.as_secs_f64()
        );
        match chart::write_png(&png, &title, &bars) {
            Ok(text) => {
                let (w, h) = chart::size_for(bars.len());
                let _ = writeln!(out, "\nchart: {} ({w}x{h})", png.display());
                if !text {
                    notes.push(format!(
                        "{} not found (fonts-dejavu-core): chart drawn without text",
                        chart::DEJAVU
                    ));
                }
            }
            Err(e) => notes.push(format!("chart: {e:#}")),
        }
    }
    let _ = writeln!(out, "\nNotes");
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    Ok((out, clean))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(ops: &[(&str, f64, f64)]) -> ScenarioResult {
        ScenarioResult {
            scenario: "hot-pull".into(),
            clients: 4,
            elapsed: Duration::from_secs(1),
            ops: ops
                .iter()
                .map(|(op, rate, mbs)| OpSummary {
                    op: op.to_string(),
                    count: *rate as u64,
                    errors: 0,
                    ops_per_s: *rate,
                    mb_per_s: *mbs,
                    p50_ms: 1.0,
                    p90_ms: 2.0,
                    p99_ms: 3.0,
                    max_ms: 4.0,
                    first_error: None,
                })
                .collect(),
        }
    }

    #[test]
    fn rows_ratios_and_table() {
        let b = result(&[
            ("manifest GET", 300.0, 0.0),
            ("blob GET", 900.0, 450.0),
            ("blob HEAD", 470.0, 0.0),
        ]);
        let d = result(&[
            ("manifest GET", 100.0, 0.0),
            ("blob GET", 150.0, 90.0),
            ("extra", 5.0, 0.0),
            ("blob HEAD", 100.0, 0.0),
        ]);
        let rows = rows_for("hot-pull", Some(&b), Some(&d));
        let ops: Vec<&str> = rows.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(
            ops,
            ["manifest GET", "blob GET", "blob HEAD", "extra", "all"]
        );
        let all = rows.last().unwrap();
        assert_eq!(all.berth.as_ref().unwrap().ops_per_s, 1670.0);
        assert_eq!(all.dist.as_ref().unwrap().ops_per_s, 355.0);
        let text = render_table(&rows);
        let line = |op: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(op))
                .unwrap()
                .to_string()
        };
        let get = line("blob GET");
        assert!(get.contains("6.00x") && get.contains("5.00x"), "{get}");
        // Berth never did "extra": no ratio, no bar.
        assert!(line("extra").contains(" - "), "{}", line("extra"));
        assert!(text.lines().any(|l| l == "hot-pull"), "{text}");
        // The total (4.70x), and the operations off it by more than 10%:
        // manifest GET (3x) and blob GET (6x), not blob HEAD (4.7x).
        let bars = bars(&rows);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "hot-pull (all operations)",
                "hot-pull: manifest GET",
                "hot-pull: blob GET"
            ]
        );
        assert!((bars[0].ratio - 1670.0 / 355.0).abs() < 1e-9);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        // Berth only: rows without ratios, no bars.
        let solo = rows_for("x", Some(&b), None);
        assert!(solo.iter().all(|r| r.dist.is_none()));
        assert!(super::bars(&solo).is_empty());
    }

    #[test]
    fn operations_in_step_share_one_bar() {
        // Anonymous GETs at 50x, three authenticated operations at 3x, the
        // total at 10x: three bars, the 3x one naming the first and "+2".
        let b = result(&[
            ("anon GET", 5000.0, 0.0),
            ("PUT", 30.0, 0.0),
            ("GET", 31.0, 0.0),
            ("HEAD", 29.0, 0.0),
        ]);
        let d = result(&[
            ("anon GET", 100.0, 0.0),
            ("PUT", 10.0, 0.0),
            ("GET", 10.0, 0.0),
            ("HEAD", 10.0, 0.0),
        ]);
        let bars = bars(&rows_for("mixed-auth", Some(&b), Some(&d)));
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "mixed-auth (all operations)",
                "mixed-auth: anon GET",
                "mixed-auth: PUT (+2 in step)"
            ]
        );
        assert_eq!(bars[2].ratio, 3.0);
    }
}
