//! What each scenario's clients do, as data: the scenario names, sizes and
//! client counts of a run (`--quick` or full), the blobs (as seeds and
//! sizes) and the images a ci-push client pushes. Pure, so it is tested
//! without a registry; `scenarios.rs` runs it.

use std::time::Duration;

use anyhow::{bail, Result};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    CiPush,
    HotPull,
    HeadHeavy,
    LargeLayer,
    MixedAuth,
    All,
}

impl Scenario {
    pub const EACH: [Scenario; 5] = [
        Scenario::CiPush,
        Scenario::HotPull,
        Scenario::HeadHeavy,
        Scenario::LargeLayer,
        Scenario::MixedAuth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::CiPush => "ci-push",
            Scenario::HotPull => "hot-pull",
            Scenario::HeadHeavy => "head-heavy",
            Scenario::LargeLayer => "large-layer",
            Scenario::MixedAuth => "mixed-auth",
            Scenario::All => "all",
        }
    }

    /// `all` → every scenario; duplicates dropped, order kept.
    pub fn expand(list: &[Scenario]) -> Vec<Scenario> {
        let mut out = Vec::new();
        for s in list {
            let each: &[Scenario] = if *s == Scenario::All {
                &Scenario::EACH
            } else {
                std::slice::from_ref(s)
            };
            for e in each {
                if !out.contains(e) {
                    out.push(*e);
                }
            }
        }
        out
    }
}

/// Sizes, clients and time of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: usize,
    pub duration: Duration,
    /// Shared base images in ci-push, and their layers each.
    pub bases: usize,
    pub base_layers: usize,
    pub base_layer_size: u64,
    /// Each ci-push (and mixed-auth push) image's own layers.
    pub app_layers: usize,
    pub app_layer_size: u64,
    pub hot_tags: usize,
    pub pull_layer_size: u64,
    pub large_clients: usize,
    pub large_layer_size: u64,
}

impl Plan {
    /// Defaults for a full or `--quick` run; options override.
    pub fn new(
        quick: bool,
        clients: Option<usize>,
        duration: Option<f64>,
        large_layer: Option<u64>,
    ) -> Result<Plan> {
        let clients = clients.unwrap_or(if quick { 8 } else { 32 });
        if !(1..=1024).contains(&clients) {
            bail!("--clients must be in 1..=1024");
        }
        let secs = duration.unwrap_or(if quick { 4.0 } else { 20.0 });
        if !(secs > 0.0 && secs <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        let mib = |full: u64, q: u64| if quick { q << 20 } else { full << 20 };
        Ok(Plan {
            clients,
            duration: Duration::from_secs_f64(secs),
            bases: 3,
            base_layers: 3,
            base_layer_size: mib(8, 1),
            app_layers: 2,
            app_layer_size: if quick { 128 << 10 } else { 1 << 20 },
            hot_tags: 3,
            pull_layer_size: mib(4, 1),
            // "A few clients": a quarter of them, at most 4.
            large_clients: (clients / 4).clamp(1, 4),
            large_layer_size: large_layer.unwrap_or(mib(256, 32)),
        })
    }

    pub fn clients_for(&self, s: Scenario) -> usize {
        match s {
            Scenario::LargeLayer => self.large_clients,
            _ => self.clients,
        }
    }
}

/// A blob as a recipe: seed and size (the bytes are made when sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobSpec {
    pub seed: u64,
    pub size: u64,
}

/// Seeds below this are blobs shared between clients.
pub const SHARED_SEEDS_END: u64 = 1 << 40;

/// Seeds: shared blobs below [`SHARED_SEEDS_END`], per-client blobs above,
/// so no two clients (or iterations) ever make the same blob by accident.
pub fn client_seed(scenario: u64, client: usize, iter: u64, n: usize) -> u64 {
    SHARED_SEEDS_END | (scenario << 56) | ((client as u64) << 28) | (iter << 4) | n as u64
}

/// The layers of base image `b` (shared by every ci-push client).
pub fn base_layers(p: &Plan, b: usize) -> Vec<BlobSpec> {
    (0..p.base_layers)
        .map(|l| BlobSpec {
            seed: 1000 + (b * 100 + l) as u64,
            size: p.base_layer_size,
        })
        .collect()
}

/// What client `client` pushes in iteration `iter` of ci-push: repository,
/// tag, which base, and its layers (the base's first, then its own).
#[derive(Debug, PartialEq, Eq)]
pub struct ImagePlan {
    pub repo: String,
    pub tag: String,
    pub base: usize,
    pub layers: Vec<BlobSpec>,
}

pub fn ci_image(p: &Plan, client: usize, iter: u64) -> ImagePlan {
    let base = (client + iter as usize) % p.bases;
    let mut layers = base_layers(p, base);
    layers.extend((0..p.app_layers).map(|n| BlobSpec {
        seed: client_seed(1, client, iter, n),
        size: p.app_layer_size,
    }));
    ImagePlan {
        repo: format!("ci/app-{client}"),
        tag: format!("build-{iter}"),
        base,
        layers,
    }
}

pub const BASE_REPO: &str = "ci/base";
pub const HOT_REPO: &str = "hot/app";
pub const HEAD_REPO: &str = "heads/app";
pub const PUBLIC_REPO: &str = "mixed/public";

/// The head-heavy image's layers (small: the requests are what count).
pub fn head_layers() -> Vec<BlobSpec> {
    (0..3)
        .map(|l| BlobSpec {
            seed: 7000 + l,
            size: 4096,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(true, Some(8), Some(1.0), None).unwrap()
    }

    #[test]
    fn all_expands_once_in_order() {
        assert_eq!(Scenario::expand(&[Scenario::All]), Scenario::EACH.to_vec());
        assert_eq!(
            Scenario::expand(&[Scenario::HeadHeavy, Scenario::All]),
            vec![
                Scenario::HeadHeavy,
                Scenario::CiPush,
                Scenario::HotPull,
                Scenario::LargeLayer,
                Scenario::MixedAuth
            ]
        );
    }

    #[test]
    fn ci_images_share_base_layers_and_nothing_else() {
        let p = plan();
        let a = ci_image(&p, 0, 0);
        let b = ci_image(&p, 3, 0);
        let c = ci_image(&p, 0, 1);
        // Client 3 iteration 0 and client 0 iteration 0 use the same base (3 bases).
        assert_eq!(a.base, b.base);
        assert_eq!(a.layers[..p.base_layers], b.layers[..p.base_layers]);
        assert_ne!(a.base, c.base);
        // Own layers never repeat across clients or iterations.
        let own = |i: &ImagePlan| i.layers[p.base_layers..].to_vec();
        let mut seeds: Vec<u64> = [&a, &b, &c]
            .iter()
            .flat_map(|i| own(i))
            .map(|l| l.seed)
            .collect();
        let n = seeds.len();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), n);
        assert_eq!(a.layers.len(), p.base_layers + p.app_layers);
        assert_eq!((a.repo.as_str(), a.tag.as_str()), ("ci/app-0", "build-0"));
    }

    #[test]
    fn plan_defaults_and_bounds() {
        let q = plan();
        assert_eq!(q.large_layer_size, 32 << 20);
        assert_eq!(q.clients_for(Scenario::LargeLayer), 2);
        assert_eq!(q.clients_for(Scenario::HotPull), 8);
        let full = Plan::new(false, None, None, Some(1 << 30)).unwrap();
        assert_eq!(
            (full.clients, full.large_clients, full.large_layer_size),
            (32, 4, 1 << 30)
        );
        assert_eq!(
            Plan::new(true, Some(1), None, None).unwrap().large_clients,
            1
        );
        assert!(Plan::new(true, Some(0), None, None).is_err());
        assert!(Plan::new(true, None, Some(0.0), None).is_err());
    }
}
