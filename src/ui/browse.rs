//! What the pages show, read through the registry layer exactly as the API
//! reads it (manifest cache, pull-through cache and all): no second code
//! path to storage. Everything here is plain data; the templates escape it.

use std::time::SystemTime;

use futures::{stream, StreamExt, TryStreamExt};
use serde_json::Value;

use super::viewer::{Undecided, Viewer};
use crate::{
    digest::Digest,
    registry::{
        error::{Code, Error, Result},
        manifests::Reference,
        Registry,
    },
};

/// Storage requests one page keeps in flight (tag counts, tag details).
const CONCURRENCY: usize = 16;

/// Catalog entries asked for at a time while filtering: few, large pages
/// (a filesystem index lists its whole directory for any page).
const SCAN_PAGE: usize = 5000;

/// Repositories whose rights are asked at once.
const RIGHTS_BATCH: usize = 100;

/// A config blob larger than this is not shown (configs are a few KiB).
const MAX_CONFIG: u64 = 1 << 20;

/// An index with more images than this gets no total size (each image is
/// a manifest read; real multi-platform indexes have a handful).
const MAX_INDEX_CHILDREN: usize = 64;

/// Referrers shown on a manifest's page.
const MAX_REFERRERS: usize = 200;

pub struct RepoRow {
    pub name: String,
    /// None: the listing failed (the row still links).
    pub tags: Option<usize>,
    /// More tags than counted ([`MAX_TAG_COUNT`]).
    pub more_tags: bool,
}

/// Tags counted for a row of the repository list; more show as "1000+".
const MAX_TAG_COUNT: usize = 1000;

/// Why a repository list page cannot be shown.
pub enum ListError {
    Registry(Error),
    Undecided(Undecided),
}

impl From<Error> for ListError {
    fn from(e: Error) -> ListError {
        ListError::Registry(e)
    }
}

pub struct RepoPage {
    pub rows: Vec<RepoRow>,
    /// Where the next page starts (`last=`), if there is more.
    pub next: Option<String>,
    /// The scan stopped at `ui.scanlimit` before the page was full.
    pub cut_short: bool,
}

/// A page of the repository list: names containing `q` that `visible`
/// lets through, after `last`, with their tag counts.
pub async fn repositories(
    registry: &Registry,
    q: &str,
    n: usize,
    last: Option<String>,
    scan_limit: usize,
    viewer: &Viewer<'_>,
) -> std::result::Result<RepoPage, ListError> {
    let q = q.to_lowercase();
    let mut names = Vec::new();
    let mut cursor = last;
    let mut scanned = 0;
    let mut next = None;
    let mut cut_short = false;
    'scan: loop {
        let page = registry
            .repositories_page(SCAN_PAGE, cursor.as_deref())
            .await?;
        let scan = &page.items[..page.items.len().min(scan_limit - scanned)];
        scanned += scan.len();
        let matching: Vec<String> = scan.iter().filter(|n| n.contains(&q)).cloned().collect();
        // What the viewer may pull, asked a batch at a time (an outside token
        // server answers one token per batch) until the page is full.
        for batch in matching.chunks(RIGHTS_BATCH) {
            let rights = viewer
                .rights_of(batch)
                .await
                .map_err(ListError::Undecided)?;
            for (name, rights) in batch.iter().zip(rights) {
                if !rights.pull {
                    continue;
                }
                if names.len() == n {
                    // One more exists: the page ends at the last one shown.
                    next = names.last().cloned();
                    break 'scan;
                }
                names.push(name.clone());
            }
        }
        let more = page.more || scan.len() < page.items.len();
        let Some(last) = scan.last().filter(|_| more) else {
            break;
        };
        if scanned >= scan_limit {
            next = Some(last.clone());
            cut_short = true;
            break;
        }
        cursor = Some(last.clone());
    }
    let rows = stream::iter(names)
        .map(|name| async move {
            let page = registry.local_tags_page(&name, MAX_TAG_COUNT, None).await;
            let (tags, more_tags) = match page {
                Ok(p) => (Some(p.items.len()), p.more),
                Err(_) => (None, false),
            };
            RepoRow {
                name,
                tags,
                more_tags,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ok(RepoPage {
        rows,
        next,
        cut_short,
    })
}

/// One tag on a repository's page.
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Compressed size: config and layers; for an index, all its images'.
    pub size: Option<u64>,
    /// `os/arch[/variant]` of an index's images.
    pub platforms: Vec<String>,
    pub pushed: Option<SystemTime>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TagSort {
    Name,
    NameDesc,
    /// Newest first.
    Pushed,
    PushedAsc,
}

impl TagSort {
    pub fn parse(s: &str) -> TagSort {
        match s {
            "-name" => TagSort::NameDesc,
            "pushed" => TagSort::Pushed,
            "-pushed" => TagSort::PushedAsc,
            _ => TagSort::Name,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TagSort::Name => "name",
            TagSort::NameDesc => "-name",
            TagSort::Pushed => "pushed",
            TagSort::PushedAsc => "-pushed",
        }
    }
}

/// How much one repository page may read.
#[derive(Clone, Copy)]
pub struct TagLimits {
    /// Tags listed (`ui.scanlimit`).
    pub listed: usize,
    /// Tags whose push time may be read to sort by it (`ui.sortlimit`).
    pub time_sorted: usize,
}

pub struct TagPage {
    pub rows: Vec<TagRow>,
    /// Tags matching the filter.
    pub matching: usize,
    /// All tags of the repository.
    pub total: usize,
    /// The repository has more tags than were listed (`ui.scanlimit`).
    pub truncated: bool,
    /// Sorting by push time was asked for more tags than `ui.sortlimit`.
    pub time_sort_refused: bool,
    pub page: usize,
    pub pages: usize,
}

/// Page `page` (from 1) of `name`'s tags containing `q`, sorted.
pub async fn tags(
    registry: &Registry,
    name: &str,
    q: &str,
    sort: TagSort,
    page: usize,
    per_page: usize,
    limits: TagLimits,
) -> Result<TagPage> {
    // What storage has (a mirror's cached tags too, without asking
    // upstream), up to the listing limit.
    let listed = registry.local_tags_page(name, limits.listed, None).await?;
    let (all, truncated) = (listed.items, listed.more);
    let total = all.len();
    let mut matching: Vec<String> = all.into_iter().filter(|t| t.contains(q)).collect();
    // Push times of every matching tag only when they decide the order.
    let mut times = std::collections::HashMap::new();
    // One stat per tag: past the limit, the tags stay in name order.
    let time_sort_refused =
        matches!(sort, TagSort::Pushed | TagSort::PushedAsc) && matching.len() > limits.time_sorted;
    match sort {
        TagSort::Name => {}
        _ if time_sort_refused => {}
        TagSort::NameDesc => matching.reverse(),
        TagSort::Pushed | TagSort::PushedAsc => {
            times = stream::iter(matching.clone())
                .map(|t| async move {
                    let at = registry.tag_pushed_at(name, &t).await?;
                    Ok::<_, Error>((t, at))
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            matching.sort_by(|a, b| {
                let (ta, tb) = (times[a], times[b]);
                let order = if sort == TagSort::Pushed {
                    tb.cmp(&ta)
                } else {
                    ta.cmp(&tb)
                };
                order.then_with(|| a.cmp(b))
            });
        }
    }
    let pages = matching.len().div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    let shown: Vec<String> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    let rows = stream::iter(shown)
        .map(|tag| {
            let known = times.get(&tag).copied();
            async move { tag_row(registry, name, tag, known).await }
        })
        .buffered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(TagPage {
        rows: rows.into_iter().flatten().collect(),
        matching: matching.len(),
        total,
        truncated,
        time_sort_refused,
        page,
        pages,
    })
}

/// None: the tag went away meanwhile.
async fn tag_row(
    registry: &Registry,
    name: &str,
    tag: String,
    pushed: Option<Option<SystemTime>>,
) -> Result<Option<TagRow>> {
    // From storage, a mirror's too: a page of rows must not send a page
    // of requests upstream.
    let m = match registry
        .local_manifest(name, &Reference::Tag(tag.clone()))
        .await
    {
        Ok(m) => m,
        Err(e) if e.code == Code::ManifestUnknown => return Ok(None),
        Err(e) => {
            // One bad tag must not hide the others (nor its delete button).
            tracing::warn!(code = e.code.as_str(), cause = ?e.cause, tag = %tag, "ui: tag unreadable");
            return Ok(Some(TagRow {
                tag,
                digest: String::new(),
                media_type: "unreadable".into(),
                size: None,
                platforms: vec![],
                pushed: None,
            }));
        }
    };
    let pushed = match pushed {
        Some(at) => at,
        None => registry.tag_pushed_at(name, &tag).await?,
    };
    let json: Value = serde_json::from_slice(&m.body).unwrap_or(Value::Null);
    let (size, platforms) = match json.get("manifests").and_then(Value::as_array) {
        Some(children) => index_summary(registry, name, children).await,
        None => (Some(image_size(&json)), vec![]),
    };
    Ok(Some(TagRow {
        tag,
        digest: m.digest.to_string(),
        media_type: m.media_type,
        size,
        platforms,
        pushed,
    }))
}

/// Config plus layers.
fn image_size(json: &Value) -> u64 {
    // Sizes come from the manifest: saturate rather than overflow.
    let size = |d: &Value| d.get("size").and_then(Value::as_u64).unwrap_or(0);
    let layers = json.get("layers").and_then(Value::as_array);
    let layers = layers.map_or(0, |l| l.iter().map(size).fold(0u64, u64::saturating_add));
    json.get("config").map_or(0, size).saturating_add(layers)
}

/// An index's total size (its images', read through the registry) and
/// platforms; the size is None when a child cannot be read.
async fn index_summary(
    registry: &Registry,
    name: &str,
    children: &[Value],
) -> (Option<u64>, Vec<String>) {
    let platforms = children
        .iter()
        .filter_map(|c| c.get("platform").map(platform_string))
        .filter(|p| p != "unknown/unknown")
        .collect();
    if children.len() > MAX_INDEX_CHILDREN {
        return (None, platforms);
    }
    let digests: Vec<Option<Digest>> = children
        .iter()
        .map(|c| c.get("digest")?.as_str()?.parse().ok())
        .collect();
    let sizes: Vec<Option<u64>> = stream::iter(digests)
        .map(|digest| async move {
            let m = registry
                .local_manifest(name, &Reference::Digest(digest?))
                .await
                .ok()?;
            let json: Value = serde_json::from_slice(&m.body).ok()?;
            Some(image_size(&json))
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let total = sizes
        .into_iter()
        .try_fold(0u64, |sum, s| s.map(|s| sum.saturating_add(s)));
    (total, platforms)
}

/// `os/architecture[/variant]`.
pub fn platform_string(p: &Value) -> String {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let mut out = format!("{}/{}", s("os"), s("architecture"));
    if !s("variant").is_empty() {
        out = format!("{out}/{}", s("variant"));
    }
    if out == "/" {
        "unknown/unknown".into()
    } else {
        out
    }
}

/// A descriptor in a table.
pub struct DescriptorRow {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// `os/arch` for an index's entries; artifactType for referrers.
    pub note: String,
    /// Annotations, as `key=value` lines.
    pub annotations: Vec<(String, String)>,
}

fn descriptor_row(d: &Value, note: String) -> DescriptorRow {
    DescriptorRow {
        digest: d["digest"].as_str().unwrap_or("").to_string(),
        media_type: d["mediaType"].as_str().unwrap_or("").to_string(),
        size: d["size"].as_u64().unwrap_or(0),
        note,
        annotations: pairs(d.get("annotations")),
    }
}

/// An object's entries as text pairs (values that are not strings as JSON).
fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What an image's config says, for people.
#[derive(Default)]
pub struct ConfigSummary {
    pub platform: String,
    pub created: String,
    pub entrypoint: String,
    pub cmd: String,
    pub user: String,
    pub workdir: String,
    /// Names only: values may be secrets someone baked in.
    pub env_names: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// A manifest's page.
pub struct ManifestDetail {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: String,
    pub is_index: bool,
    /// Config and layers, or an index's total (None: an image of it
    /// unreadable, or too many images).
    pub size: Option<u64>,
    pub json: String,
    pub config: Option<DescriptorRow>,
    pub config_summary: Option<ConfigSummary>,
    /// The config blob, pretty; None if not an image, too large or unreadable.
    pub config_json: Option<String>,
    pub layers: Vec<DescriptorRow>,
    /// An index's images (note: platform).
    pub children: Vec<DescriptorRow>,
    pub annotations: Vec<(String, String)>,
    pub subject: Option<String>,
    /// note: artifactType.
    pub referrers: Vec<DescriptorRow>,
}

pub async fn manifest(
    registry: &Registry,
    name: &str,
    reference: &Reference,
) -> Result<ManifestDetail> {
    let m = registry.get_manifest(name, reference).await?;
    let json: Value = serde_json::from_slice(&m.body)
        .map_err(|e| Error::internal(format!("stored manifest is not JSON: {e}")))?;
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    let children: Vec<DescriptorRow> = json["manifests"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|d| {
                    descriptor_row(
                        d,
                        d.get("platform").map_or_else(String::new, platform_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let is_index = json["manifests"].is_array();
    let layers: Vec<DescriptorRow> = json["layers"]
        .as_array()
        .map(|l| l.iter().map(|d| descriptor_row(d, String::new())).collect())
        .unwrap_or_default();
    let config = json.get("config").map(|d| descriptor_row(d, String::new()));
    let (config_json, config_summary) = match &config {
        Some(c) if c.size <= MAX_CONFIG && is_image_config(&c.media_type) => {
            match read_config(registry, name, &c.digest, c.size).await {
                Some(v) => (
                    serde_json::to_string_pretty(&v).ok(),
                    Some(summarize_config(&v)),
                ),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    let size = if is_index {
        index_summary(
            registry,
            name,
            json["manifests"].as_array().map_or(&[], |v| v),
        )
        .await
        .0
    } else {
        Some(image_size(&json))
    };
    let referrers = referrers(registry, name, &m.digest).await?;
    let artifact_type = json["artifactType"]
        .as_str()
        .or_else(|| {
            config
                .as_ref()
                .map(|c| c.media_type.as_str())
                .filter(|t| !is_image_config(t))
        })
        .unwrap_or("")
        .to_string();
    Ok(ManifestDetail {
        digest: m.digest.to_string(),
        media_type: m.media_type,
        artifact_type,
        is_index,
        size,
        json: pretty,
        config,
        config_summary,
        config_json,
        layers,
        children,
        annotations: pairs(json.get("annotations")),
        subject: json["subject"]["digest"].as_str().map(str::to_string),
        referrers,
    })
}

fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

async fn read_config(registry: &Registry, name: &str, digest: &str, size: u64) -> Option<Value> {
    let d: Digest = digest.parse().ok()?;
    // Only a blob this repository links, as a pull of it would be served.
    registry.stat_blob(name, &d).await.ok()?;
    let mut stream = registry.read_blob(&d, 0, Some(size)).await.ok()?;
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.ok()?);
        if bytes.len() as u64 > MAX_CONFIG {
            return None;
        }
    }
    serde_json::from_slice(&bytes).ok()
}

fn summarize_config(v: &Value) -> ConfigSummary {
    let c = &v["config"];
    let words = |x: &Value| {
        x.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            })
            .map(|w| serde_json::to_string(&w).unwrap_or_default())
            .unwrap_or_default()
    };
    ConfigSummary {
        platform: platform_string(v),
        created: v["created"].as_str().unwrap_or("").to_string(),
        entrypoint: words(&c["Entrypoint"]),
        cmd: words(&c["Cmd"]),
        user: c["User"].as_str().unwrap_or("").to_string(),
        workdir: c["WorkingDir"].as_str().unwrap_or("").to_string(),
        env_names: c["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|e| e.split('=').next().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
        labels: pairs(c.get("Labels")),
    }
}

/// Signatures, SBOMs, attestations: every referrer, by artifact type.
async fn referrers(
    registry: &Registry,
    name: &str,
    subject: &Digest,
) -> Result<Vec<DescriptorRow>> {
    let page = registry
        .referrers(name, subject, None, MAX_REFERRERS, None)
        .await?;
    let mut rows: Vec<DescriptorRow> = page.index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|d| descriptor_row(d, d["artifactType"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.note.cmp(&b.note).then_with(|| a.digest.cmp(&b.digest)));
    Ok(rows)
}
