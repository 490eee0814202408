//! `loadtest ui`: how long the web UI takes to render its pages on a
//! registry of `--repos` (2,000) repositories and one repository of
//! `--tags` (500) tags (issue 14).
//!
//! One Berth on a fresh filesystem root, no auth, access log off, is filled
//! through the registry API, 16 requests in flight: a small image (config,
//! one 4 KiB layer, OCI manifest) pushed to `bench/seed`, then
//! `bench/repo-0000`… each getting both blobs by cross-repository mount and
//! the manifest as `v1`, and `bench/tags` the same manifest as `t-0000`….
//!
//! Then, one request at a time on one keep-alive connection (sending back
//! the session cookie the first page set, as a browser does), each page
//! gets 3 warm-up requests and `--samples` (30, quick 10) timed ones, taken
//! in rounds (every page once per round) so that drift on a shared machine
//! spreads over all of them. A sample is the wall time from sending the
//! request until the whole body is read; it must be a 200 whose body holds
//! the expected number of rows (`class="repo-name"`, `class="tag-name"`, …),
//! or the run fails. The pages:
//!
//! - the repository list: first page, a search (`q=repo-19`), a page deep
//!   in the catalog (`last=bench/repo-1000`) — 50 rows, each with a tag count;
//! - the tags of `bench/tags` by name (100 of 500 rows, each a manifest
//!   read and a tag stat) and by push time (every tag's link stat'ed to sort);
//! - the image page of `bench/tags:t-0000` (manifest, config, referrers).
//!
//! Beside them, the API requests each is built from, as the reference of the
//! ratio column: `/v2/_catalog?n=50` for the list pages, `tags/list` for the
//! tag pages, a manifest GET for the image page.
//!
//! Budgets, absolute, for a 2-core machine shared with the client (a person
//! waiting on a page): repository list (each of the three) median <= 250 ms,
//! tag page by name median <= 500 ms, image page median <= 250 ms. The tag
//! page by push time is shown without a budget. Exit status 1 on a FAIL.

use std::{net::SocketAddr, rc::Rc, time::Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, StatusCode};

use crate::{
    authbench,
    compare::median,
    http::{drain, expect, read_body, Client, ReqBody},
    progress::{count_bar, note, phase, spinner},
    report::{num, table},
    servers::RegistryKind,
    setup,
    workloads::{self, percentile_ms, TestImage, OCI_MANIFEST},
    UiArgs,
};

const SEED: &str = "bench/seed";
const TAGS: &str = "bench/tags";
/// Requests in flight while filling.
const FILL_AT_ONCE: usize = 16;
const WARMUP: usize = 3;
/// Rows per page: `ui.pagesize`'s default, and the tag page's fixed 100.
const LIST_ROWS: usize = 50;
const TAG_ROWS: usize = 100;
const LIST_BUDGET_MS: f64 = 250.0;
const TAG_BUDGET_MS: f64 = 500.0;
const IMAGE_BUDGET_MS: f64 = 250.0;

/// One page measured: what it is, its path, what its body must hold, and
/// (for UI pages) the index of its API reference and its budget.
struct Probe {
    label: String,
    path: String,
    accept: Option<&'static str>,
    marker: &'static str,
    /// Occurrences of `marker` the body must hold.
    rows: usize,
    reference: Option<usize>,
    budget: Option<(&'static str, f64)>,
    /// Milliseconds per sample.
    times: Vec<f64>,
}

impl Probe {
    fn new(label: &str, path: String, marker: &'static str, rows: usize) -> Probe {
        Probe {
            label: label.into(),
            path,
            accept: None,
            marker,
            rows,
            reference: None,
            budget: None,
            times: Vec::new(),
        }
    }

    fn median(&self) -> Option<f64> {
        median(self.times.clone())
    }

    fn p95(&self) -> Option<f64> {
        let mut us: Vec<u32> = self.times.iter().map(|ms| (ms * 1000.0) as u32).collect();
        us.sort_unstable();
        (!us.is_empty()).then(|| percentile_ms(&us, 0.95))
    }
}

fn repo_name(i: usize) -> String {
    format!("bench/repo-{i:04}")
}

/// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`: must be 201.
async fn mount(c: &mut Client, repo: &str, digest: &str, from: &str) -> Result<()> {
    let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let resp = c.send(Method::POST, &path, &[], ReqBody::Empty).await?;
    drain(expect(resp, StatusCode::CREATED, "POST mount").await?, None).await?;
    Ok(())
}

/// The seed image, `repos` repositories by mount, `tags` tags on `bench/tags`.
async fn fill(addr: SocketAddr, repos: usize, tags: usize) -> Result<String> {
    let t0 = Instant::now();
    let sp = spinner(format!("pushing the image to {SEED}"));
    workloads::setup_manifest(addr, SEED, None).await?;
    // The image setup_manifest pushes.
    let img = TestImage::new(0)?;
    let mut c = Client::new(addr);
    for d in [&img.config_digest, &img.layer_digest] {
        mount(&mut c, TAGS, d, SEED).await?;
    }
    sp.finish_and_clear();

    let items: Vec<(Bytes, String)> = (0..repos)
        .map(|i| (img.manifest.clone(), repo_name(i)))
        .collect();
    let pb = count_bar(repos as u64, "repositories (2 mounts + PUT)");
    let blobs = [img.config_digest.clone(), img.layer_digest.clone()];
    let r = workloads::send_small_blobs(
        addr,
        Rc::new(items),
        FILL_AT_ONCE,
        &pb,
        async move |c: &mut Client, manifest: &Bytes, repo: &str| {
            for d in &blobs {
                mount(c, repo, d, SEED).await?;
            }
            workloads::put_manifest(c, repo, "v1", manifest).await
        },
    )
    .await
    .context("filling repositories")?;
    pb.finish_and_clear();
    note(format!(
        "{repos} repositories in {:.1} s ({:.0}/s, p50 {:.1} ms, p99 {:.1} ms each)",
        r.elapsed.as_secs_f64(),
        r.per_sec(),
        r.p50_ms,
        r.p99_ms
    ));

    let items: Vec<(Bytes, String)> = (0..tags)
        .map(|i| (img.manifest.clone(), format!("t-{i:04}")))
        .collect();
    let pb = count_bar(tags as u64, format!("tags of {TAGS} (PUT)"));
    let r = workloads::send_small_blobs(
        addr,
        Rc::new(items),
        FILL_AT_ONCE,
        &pb,
        async move |c: &mut Client, manifest: &Bytes, tag: &str| {
            workloads::put_manifest(c, TAGS, tag, manifest).await
        },
    )
    .await
    .context("filling tags")?;
    pb.finish_and_clear();
    note(format!(
        "{tags} tags in {:.1} s ({:.0}/s)",
        r.elapsed.as_secs_f64(),
        r.per_sec()
    ));
    let line = format!(
        "fill: {} repositories ({repos} by mount, {SEED}, {TAGS}) and {tags} tags through the API \
         in {:.1} s, {FILL_AT_ONCE} requests in flight",
        repos + 2,
        t0.elapsed().as_secs_f64()
    );
    note(&line);
    Ok(line)
}

/// One request of `p`: its time in ms (send to last body byte), after
/// checking status and rows. Keeps the first session cookie it is given.
async fn sample(c: &mut Client, p: &Probe, cookie: &mut Option<String>) -> Result<f64> {
    let mut headers = Vec::new();
    if let Some(a) = p.accept {
        headers.push((header::ACCEPT, a));
    }
    if let Some(k) = cookie.as_deref() {
        headers.push((header::COOKIE, k));
    }
    let t0 = Instant::now();
    let resp = c
        .send(Method::GET, &p.path, &headers, ReqBody::Empty)
        .await?;
    let resp = expect(resp, StatusCode::OK, &format!("GET {}", p.path)).await?;
    let set = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = read_body(resp).await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if cookie.is_none() {
        *cookie = set;
    }
    let text = String::from_utf8_lossy(&body);
    let found = text.matches(p.marker).count();
    if found != p.rows {
        bail!(
            "GET {}: {found} times {:?} in the body, expected {} ({} bytes)",
            p.path,
            p.marker,
            p.rows,
            body.len()
        );
    }
    Ok(ms)
}

/// The pages, UI first; references point at the API rows.
fn probes(repos: usize, tags: usize) -> Vec<Probe> {
    let all = repos + 2; // with bench/seed and bench/tags
    let q = "repo-19";
    let matching = (0..repos).filter(|&i| repo_name(i).contains(q)).count();
    let half = repos / 2;
    let tag_rows = tags.min(TAG_ROWS);
    let (catalog, tag_list, manifest) = (6, 7, 8);
    let ui = |label, path: String, marker, rows, reference, budget| Probe {
        reference: Some(reference),
        budget,
        ..Probe::new(label, path, marker, rows)
    };
    vec![
        ui(
            "repository list, first page",
            "/ui/".into(),
            r#"class="repo-name""#,
            all.min(LIST_ROWS),
            catalog,
            Some(("repository list (first page)", LIST_BUDGET_MS)),
        ),
        ui(
            "repository list, search q=repo-19",
            format!("/ui/?q={q}"),
            r#"class="repo-name""#,
            matching.min(LIST_ROWS),
            catalog,
            Some(("repository list (search q=repo-19)", LIST_BUDGET_MS)),
        ),
        ui(
            "repository list, deep page",
            format!("/ui/?last={}", repo_name(half)),
            r#"class="repo-name""#,
            (all - half - 1).min(LIST_ROWS),
            catalog,
            Some(("repository list (deep page)", LIST_BUDGET_MS)),
        ),
        ui(
            "tag page, by name",
            format!("/ui/r/{TAGS}"),
            r#"class="tag-name""#,
            tag_rows,
            tag_list,
            Some(("tag page (by name)", TAG_BUDGET_MS)),
        ),
        ui(
            "tag page, sort=pushed",
            format!("/ui/r/{TAGS}?sort=pushed"),
            r#"class="tag-name""#,
            tag_rows,
            tag_list,
            None,
        ),
        ui(
            "image page",
            format!("/ui/r/{TAGS}/-/tag/t-0000"),
            r#"class="layer""#,
            1,
            manifest,
            Some(("image page", IMAGE_BUDGET_MS)),
        ),
        Probe::new(
            "API: catalog n=50",
            format!("/v2/_catalog?n={LIST_ROWS}"),
            r#""bench/"#,
            all.min(LIST_ROWS),
        ),
        Probe::new(
            "API: tags/list",
            format!("/v2/{TAGS}/tags/list"),
            r#""t-"#,
            tags,
        ),
        Probe {
            accept: Some(OCI_MANIFEST),
            ..Probe::new(
                "API: manifest GET",
                format!("/v2/{TAGS}/manifests/t-0000"),
                r#""schemaVersion""#,
                1,
            )
        },
    ]
}

/// Warm-ups for every page, then `samples` rounds of every page once.
async fn measure(addr: SocketAddr, probes: &mut [Probe], samples: usize) -> Result<()> {
    let mut c = Client::new(addr);
    let mut cookie = None;
    for p in probes.iter() {
        for _ in 0..WARMUP {
            sample(&mut c, p, &mut cookie).await?;
        }
        note(format!("{}: {} ({} rows) ok", p.label, p.path, p.rows));
    }
    let pb = count_bar((samples * probes.len()) as u64, "timed requests");
    for _ in 0..samples {
        for p in probes.iter_mut() {
            let ms = sample(&mut c, p, &mut cookie).await?;
            p.times.push(ms);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(())
}

pub async fn run(args: UiArgs) -> Result<(String, bool)> {
    let (repos, tags) = (args.repos, args.tags);
    let samples = args.samples.unwrap_or(if args.quick { 10 } else { 30 });
    if !(1..=9999).contains(&repos) || !(1..=9999).contains(&tags) {
        bail!("--repos and --tags must be in 1..=9999 (names have four digits)");
    }
    if !(1..=10_000).contains(&samples) {
        bail!("--samples must be in 1..=10000");
    }
    let berth = setup::binaries(&args.bins, true).await?;
    let tmp = setup::work_dir("loadtest-ui-", args.workdir.as_deref())?;
    let mut notes = Vec::new();

    phase("berth: filesystem root, no auth, access log off");
    let mut server = authbench::start(RegistryKind::Berth, &berth, tmp.path(), "berth", None)
        .await
        .context("starting berth")?;
    note(format!(
        "berth on {} (pid {})",
        server.addr,
        server.proc.pid()
    ));

    phase(&format!(
        "filling: {repos} repositories, {tags} tags on {TAGS}"
    ));
    let fill_line = fill(server.addr, repos, tags).await?;

    phase(&format!(
        "measuring: {WARMUP} warm-ups, then {samples} rounds of every page"
    ));
    let mut probes = probes(repos, tags);
    measure(server.addr, &mut probes, samples)
        .await
        .with_context(|| format!("berth log:\n{}", server.proc.log_tail(20)))?;
    if let Err(e) = server.proc.check_running() {
        notes.push(format!("{e:#}"));
    }

    let mut rows = vec![vec![
        "page".to_string(),
        "median ms".into(),
        "p95 ms".into(),
        "UI/API".into(),
        "API reference".into(),
        "path".into(),
    ]];
    for p in &probes {
        let reference = p.reference.map(|i| &probes[i]);
        let ratio = reference
            .and_then(|r| Some(p.median()? / r.median()?))
            .map_or(String::new(), |x| format!("{x:.1}x"));
        rows.push(vec![
            p.label.clone(),
            num(p.median()),
            num(p.p95()),
            ratio,
            reference.map_or(String::new(), |r| r.label.clone()),
            p.path.clone(),
        ]);
    }
    let mut text = format!(
        "\nloadtest ui: {} repositories, {tags} tags on {TAGS}; {samples} samples per page \
         (after {WARMUP} warm-ups), one request at a time\n{fill_line}\n\n{}\n",
        repos + 2,
        table(&rows)
    );
    let mut ok = true;
    for p in &probes {
        let Some((name, budget)) = p.budget else {
            continue;
        };
        let m = p.median();
        let pass = m.is_some_and(|m| m <= budget);
        ok &= pass;
        text += &format!(
            "{} ui {name}: {} ms median (budget {budget:.0} ms)\n",
            if pass { "PASS" } else { "FAIL" },
            num(m)
        );
    }
    drop(server);
    setup::finish_work_dir(tmp, args.keep, &mut notes);
    for n in &notes {
        text += &format!("- {n}\n");
    }
    Ok((text, ok))
}

#[cfg(test)]
mod tests {
    use super::probes;

    #[test]
    fn pages_and_references() {
        let ps = probes(2000, 500);
        for p in &ps {
            match p.reference {
                Some(i) => assert!(ps[i].label.starts_with("API: "), "{}", p.label),
                None => assert!(p.label.starts_with("API: "), "{}", p.label),
            }
        }
        let rows: Vec<usize> = ps.iter().map(|p| p.rows).collect();
        // repo-1900..repo-1999 match the search: a full page.
        assert_eq!(rows, [50, 50, 50, 100, 100, 1, 50, 500, 1]);
        assert_eq!(ps[2].path, "/ui/?last=bench/repo-1000");
        // Small runs: short pages, still consistent.
        let rows: Vec<usize> = probes(10, 5).iter().map(|p| p.rows).collect();
        assert_eq!(rows, [12, 0, 6, 5, 5, 1, 12, 5, 1]);
    }
}
