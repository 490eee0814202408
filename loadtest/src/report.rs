//! The printed result: one table comparing Berth with distribution, the
//! reference figures measured in the same run, and the targets as
//! PASS/FAIL lines.

use std::fmt::Write as _;

use crate::{docker::DockerTimes, workloads::LoadResult};

/// Figures for distribution 2.8.2 measured earlier on this machine (the issue).
pub struct EarlierDistribution {
    pub push: f64,
    pub chunked: f64,
    pub pull: f64,
    pub small: f64,
    pub head: f64,
    pub get: f64,
    pub rss_mib: f64,
}

pub const EARLIER: EarlierDistribution = EarlierDistribution {
    push: 171.0,
    chunked: 142.0,
    pull: 2347.0,
    small: 235.0,
    head: 1404.0,
    get: 1513.0,
    rss_mib: 237.0,
};

/// Small-blob push figures.
#[derive(Clone, Copy, Debug)]
pub struct Small {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Everything measured for one registry; `None` where a step failed.
#[derive(Default)]
pub struct RegistryFigures {
    pub label: &'static str,
    pub push_mono: Option<f64>,
    pub push_chunked: Option<f64>,
    pub pull: Option<f64>,
    pub small: Option<Small>,
    pub docker: Option<DockerTimes>,
    pub head: Option<LoadResult>,
    pub get: Option<LoadResult>,
    /// Bytes.
    pub rss_peak: u64,
    pub rss_big: u64,
}

#[derive(Default)]
pub struct References {
    pub sha_openssl: Option<f64>,
    pub sha_rust: f64,
    pub disk: Option<f64>,
    /// dd again at the end of the run.
    pub disk_end: Option<f64>,
    pub nginx_sendfile: Option<f64>,
    pub nginx_get: Option<LoadResult>,
    pub nginx_head: Option<LoadResult>,
}

impl References {
    /// The SHA-256 rate the push target uses: openssl's, as the issue names
    /// it, else sha2's.
    pub fn sha(&self) -> f64 {
        self.sha_openssl.unwrap_or(self.sha_rust)
    }

    /// The disk rate the push target uses: the better of the two dd runs
    /// (other load on the machine only ever slows a run down).
    pub fn disk_best(&self) -> Option<f64> {
        match (self.disk, self.disk_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

pub struct Report {
    pub blob_size: u64,
    pub chunk_size: u64,
    pub small_count: usize,
    pub small_size: u64,
    pub small_concurrency: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub image_bytes: Option<u64>,
    pub berth: RegistryFigures,
    pub dist: Option<RegistryFigures>,
    pub refs: References,
    pub notes: Vec<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(b: Option<f64>, d: Option<f64>) -> String {
    match (b, d) {
        (Some(b), Some(d)) if d > 0.0 => format!("{:.2}x", b / d),
        _ => "-".into(),
    }
}

fn lat(l: Option<LoadResult>) -> Option<String> {
    l.map(|l| format!("{:.2}/{:.2}", l.p50_ms, l.p99_ms))
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let b = &self.berth;
        let d = self.dist.as_ref();
        let dv = |f: &dyn Fn(&RegistryFigures) -> Option<f64>| d.and_then(f);
        let size_mib = self.blob_size as f64 / MIB;
        let mut rows: Vec<[String; 5]> = vec![[
            "metric".into(),
            "berth".into(),
            "distribution".into(),
            "berth/dist".into(),
            "dist earlier".into(),
        ]];
        let mut row = |name: String, bv: Option<f64>, dvv: Option<f64>, earlier: Option<f64>| {
            rows.push([name, num(bv), num(dvv), ratio(bv, dvv), num(earlier)]);
        };
        row(
            format!("push {size_mib:.0} MiB monolithic (MB/s)"),
            b.push_mono,
            dv(&|r| r.push_mono),
            Some(EARLIER.push),
        );
        row(
            format!(
                "push {size_mib:.0} MiB chunked {:.0} MiB (MB/s)",
                self.chunk_size as f64 / MIB
            ),
            b.push_chunked,
            dv(&|r| r.push_chunked),
            Some(EARLIER.chunked),
        );
        row(
            format!("pull {size_mib:.0} MiB (MB/s)"),
            b.pull,
            dv(&|r| r.pull),
            Some(EARLIER.pull),
        );
        row(
            format!(
                "small blobs {}x{} B, c={} (blobs/s)",
                self.small_count, self.small_size, self.small_concurrency
            ),
            b.small.map(|s| s.per_sec),
            dv(&|r| r.small.map(|s| s.per_sec)),
            Some(EARLIER.small),
        );
        let image = self
            .image_bytes
            .map_or(String::new(), |n| format!(" {:.0} MiB", n as f64 / MIB));
        row(
            format!("docker push{image} (s, lower better)"),
            b.docker.map(|t| t.push.as_secs_f64()),
            dv(&|r| r.docker.map(|t| t.push.as_secs_f64())),
            None,
        );
        row(
            format!("docker pull{image} (s, lower better)"),
            b.docker.map(|t| t.pull.as_secs_f64()),
            dv(&|r| r.docker.map(|t| t.pull.as_secs_f64())),
            None,
        );
        row(
            format!("blob HEAD c={} (req/s)", self.connections),
            b.head.map(|l| l.rps),
            dv(&|r| r.head.map(|l| l.rps)),
            Some(EARLIER.head),
        );
        row(
            format!("manifest GET c={} (req/s)", self.connections),
            b.get.map(|l| l.rps),
            dv(&|r| r.get.map(|l| l.rps)),
            Some(EARLIER.get),
        );
        row(
            "peak RSS, whole run (MiB)".into(),
            Some(b.rss_peak as f64 / MIB),
            dv(&|r| Some(r.rss_peak as f64 / MIB)),
            Some(EARLIER.rss_mib),
        );
        row(
            format!("peak RSS, {size_mib:.0} MiB transfers (MiB)"),
            Some(b.rss_big as f64 / MIB),
            dv(&|r| Some(r.rss_big as f64 / MIB)),
            None,
        );
        let mut text_row = |name: &str, bv: Option<String>, dvv: Option<String>| {
            let s = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            rows.push([name.into(), s(bv), s(dvv), String::new(), String::new()]);
        };
        text_row(
            "  small blob push p50/p99 (ms)",
            b.small.map(|s| format!("{:.2}/{:.2}", s.p50_ms, s.p99_ms)),
            d.and_then(|r| r.small.map(|s| format!("{:.2}/{:.2}", s.p50_ms, s.p99_ms))),
        );
        text_row(
            "  blob HEAD p50/p99 (ms)",
            lat(b.head),
            d.and_then(|r| lat(r.head)),
        );
        text_row(
            "  manifest GET p50/p99 (ms)",
            lat(b.get),
            d.and_then(|r| lat(r.get)),
        );
        let errs = |l: Option<LoadResult>| l.map(|l| l.errors.to_string());
        text_row(
            "  HEAD/GET errors",
            Some(format!(
                "{}/{}",
                errs(b.head).unwrap_or("-".into()),
                errs(b.get).unwrap_or("-".into())
            )),
            d.map(|r| {
                format!(
                    "{}/{}",
                    errs(r.head).unwrap_or("-".into()),
                    errs(r.get).unwrap_or("-".into())
                )
            }),
        );

        let _ = writeln!(
            out,
            "\nResults (MB = 10^6 bytes; load phases {:.0} s each; \"dist earlier\" = distribution 2.8.2 measured before on this machine)",
            self.duration_s
        );
        out.push_str(&table(&rows));

        let r = &self.refs;
        let _ = writeln!(out, "\nReference figures (same run)");
        let mut refs: Vec<[String; 5]> = Vec::new();
        let mut rrow = |name: String, v: String| {
            refs.push([name, v, String::new(), String::new(), String::new()]);
        };
        rrow(
            "sha256 1 core, openssl -evp 16 KiB".into(),
            format!("{} MB/s", num(r.sha_openssl)),
        );
        rrow(
            "sha256 1 core, sha2 crate 16 KiB".into(),
            format!("{} MB/s", num(Some(r.sha_rust))),
        );
        rrow(
            format!("disk synced write, dd {size_mib:.0} MiB fdatasync"),
            format!(
                "{} MB/s (start), {} MB/s (end)",
                num(r.disk),
                num(r.disk_end)
            ),
        );
        rrow(
            format!("nginx sendfile GET {size_mib:.0} MiB"),
            format!("{} MB/s", num(r.nginx_sendfile)),
        );
        rrow(
            format!("nginx 1 KiB GET c={}", self.connections),
            format!(
                "{} req/s, p50/p99 {} ms",
                num(r.nginx_get.map(|l| l.rps)),
                lat(r.nginx_get).unwrap_or("-".into())
            ),
        );
        rrow(
            format!("nginx 1 KiB HEAD c={}", self.connections),
            format!(
                "{} req/s, p50/p99 {} ms",
                num(r.nginx_head.map(|l| l.rps)),
                lat(r.nginx_head).unwrap_or("-".into())
            ),
        );
        out.push_str(&table(&refs));

        let _ = writeln!(out, "\nTargets (Berth)");
        for line in self.targets() {
            let _ = writeln!(out, "{line}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    /// `PASS ...` / `FAIL ...` / `N/A ...` lines.
    pub fn targets(&self) -> Vec<String> {
        let b = &self.berth;
        let r = &self.refs;
        let mut lines = Vec::new();
        let mut check =
            |name: &str, v: Option<f64>, bound: Option<f64>, unit: &str, how: String, le: bool| {
                lines.push(target_line(name, v, bound, unit, how, le));
            };
        let push_bound = r.disk_best().map(|disk| 0.6 * r.sha().min(disk));
        let push_how = format!(
            "0.6 x min(sha256 {}, disk {})",
            num(Some(r.sha())),
            num(r.disk_best())
        );
        check(
            "push monolithic",
            b.push_mono,
            push_bound,
            "MB/s",
            push_how.clone(),
            false,
        );
        check(
            "push chunked",
            b.push_chunked,
            push_bound,
            "MB/s",
            push_how,
            false,
        );
        check(
            "pull",
            b.pull,
            r.nginx_sendfile.map(|n| 0.9 * n),
            "MB/s",
            format!("0.9 x nginx sendfile {}", num(r.nginx_sendfile)),
            false,
        );
        let nginx = r.nginx_get.map(|l| l.rps);
        let how = format!("0.3 x nginx 1 KiB GET {}", num(nginx));
        check(
            "manifest GET",
            b.get.map(|l| l.rps),
            nginx.map(|n| 0.3 * n),
            "req/s",
            how.clone(),
            false,
        );
        check(
            "blob HEAD",
            b.head.map(|l| l.rps),
            nginx.map(|n| 0.3 * n),
            "req/s",
            how,
            false,
        );
        check(
            "peak RSS",
            Some(b.rss_peak as f64 / MIB),
            Some(64.0),
            "MiB",
            "whole run, VmHWM/VmRSS".into(),
            true,
        );
        lines
    }

    pub fn all_pass(&self) -> bool {
        self.targets().iter().all(|l| l.starts_with("PASS"))
    }
}

/// One target as a `PASS`/`FAIL` line (`N/A` when either side is
/// missing): `v` must be `<=` the bound when `le`, else `>=`.
pub fn target_line(
    name: &str,
    v: Option<f64>,
    bound: Option<f64>,
    unit: &str,
    how: String,
    le: bool,
) -> String {
    match (v, bound) {
        (Some(v), Some(t)) => {
            let ok = if le { v <= t } else { v >= t };
            format!(
                "{} {name}: {} {unit} {} {} {unit} ({how})",
                if ok { "PASS" } else { "FAIL" },
                num(Some(v)),
                if le { "<=" } else { ">=" },
                num(Some(t)),
            )
        }
        _ => format!("N/A  {name}: not measured ({how})"),
    }
}

/// Left-aligned first column, right-aligned others; empty trailing cells dropped.
pub fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let cols = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.as_ref()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let r = r.as_ref();
        let Some(first) = r.first() else {
            continue;
        };
        let mut line = format!("{:<w$}", first, w = widths[0]);
        for (c, w) in r.iter().zip(&widths).skip(1) {
            if *w > 0 {
                let _ = write!(line, "  {c:>w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let lr = |rps| LoadResult {
            requests: 100,
            errors: 0,
            rps,
            p50_ms: 1.0,
            p99_ms: 5.0,
            max_ms: 9.0,
        };
        Report {
            blob_size: 1 << 30,
            chunk_size: 16 << 20,
            small_count: 1000,
            small_size: 4096,
            small_concurrency: 16,
            connections: 64,
            duration_s: 10.0,
            image_bytes: Some(48 << 20),
            berth: RegistryFigures {
                label: "berth",
                push_mono: Some(700.0),
                push_chunked: Some(650.0),
                pull: Some(2000.0),
                head: Some(lr(9000.0)),
                get: Some(lr(8000.0)),
                rss_peak: 30 << 20,
                ..Default::default()
            },
            dist: None,
            refs: References {
                sha_openssl: Some(1900.0),
                sha_rust: 1800.0,
                disk: Some(1000.0),
                disk_end: Some(400.0),
                nginx_sendfile: Some(2100.0),
                nginx_get: Some(lr(20000.0)),
                nginx_head: None,
            },
            notes: vec![],
        }
    }

    #[test]
    fn targets_pass_and_fail() {
        let mut r = sample();
        let t = r.targets();
        assert!(
            t[0].starts_with("PASS push monolithic: 700 MB/s >= 600 MB/s"),
            "{}",
            t[0]
        );
        assert!(t[2].starts_with("PASS pull"), "{}", t[2]);
        assert!(r.all_pass());
        r.berth.rss_peak = 65 << 20;
        assert!(r.targets()[5].starts_with("FAIL peak RSS"));
        r.refs.disk = None;
        r.refs.disk_end = None;
        assert!(r.targets()[0].starts_with("N/A"));
        assert!(!r.all_pass());
        let text = r.render();
        assert!(text.contains("push 1024 MiB monolithic (MB/s)"));
    }
}
