//! Images for the Docker engine tests: a base imported from a generated
//! rootfs, layers added by `docker build` (COPY only, no container runs), and
//! reading what `docker push` reports. Shared by clients.rs and cluster.rs.

use std::{fs, path::Path};

use super::{daemons::Dockerd, oci::tar};

/// A locally built image.
pub struct Image {
    /// Local tag it was built as.
    pub tag: String,
    /// Image id (the config digest).
    pub id: String,
    /// Uncompressed layer digests (diff ids), base first.
    pub diff_ids: Vec<String>,
}

/// The base: `docker import` of a generated rootfs tar (one layer).
pub fn import_base(d: &Dockerd, work: &Path, tag: &str) {
    let rootfs = tar(&[
        ("etc/", b""),
        ("etc/os-release", b"NAME=berth-test\n"),
        ("bin/", b""),
        (
            "bin/placeholder",
            b"no shell here: images are built with COPY only\n",
        ),
    ]);
    let path = work.join("rootfs.tar");
    fs::write(&path, rootfs).unwrap();
    d.ok(&["import", path.to_str().unwrap(), tag]);
}

/// `docker build` FROM `base` adding one COPY layer per file in `files`
/// (written into a shared context, so equal files give equal layers).
pub fn build(d: &Dockerd, work: &Path, base: &str, tag: &str, files: &[(&str, &str)]) -> Image {
    let ctx = work.join("context");
    fs::create_dir_all(&ctx).unwrap();
    let mut dockerfile = format!("FROM {base}\n");
    for (name, content) in files {
        let path = ctx.join(name);
        // Rewriting identical content would change the mtime and so the layer.
        if fs::read_to_string(&path).ok().as_deref() != Some(content) {
            fs::write(&path, content).unwrap();
        }
        dockerfile += &format!("COPY {name} /data/{name}\n");
    }
    let df = ctx.join(format!("Dockerfile.{}", tag.replace([':', '/'], "_")));
    fs::write(&df, dockerfile).unwrap();
    d.ok(&[
        "build",
        "-f",
        df.to_str().unwrap(),
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    Image {
        tag: tag.to_string(),
        id: d.inspect(tag, "{{.Id}}"),
        diff_ids: d
            .inspect(tag, "{{range .RootFS.Layers}}{{println .}}{{end}}")
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// `len` bytes of deterministic, poorly compressible hex text.
pub fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s += &format!("{x:016x}");
    }
    s.truncate(len);
    s
}

/// `docker push`; returns the manifest digest it reports and its output.
pub fn push(d: &Dockerd, reference: &str) -> (String, String) {
    let out = d.ok(&["push", reference]).all();
    let at = out
        .find("digest: sha256:")
        .unwrap_or_else(|| panic!("no digest in push output:\n{out}"));
    let digest = out[at + 8..at + 8 + 71].to_string();
    (digest, out)
}

/// The last status docker printed for a layer in push output, e.g.
/// "Pushed", "Layer already exists", "Mounted from t/img". Lines are keyed by
/// the first 12 hex digits of the layer's diff id.
pub fn layer_status(out: &str, diff_id: &str) -> String {
    let short = &diff_id.trim_start_matches("sha256:")[..12];
    out.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{short}: ")))
        .rfind(|s| *s != "Preparing" && *s != "Waiting" && !s.starts_with("Pushing"))
        .unwrap_or_else(|| panic!("no status for layer {short} in:\n{out}"))
        .to_string()
}

/// Tag and push `one`, whose layers are all new, then `two`, which shares
/// its first two layers with `one`, both into `repo` (`one` and `two` tags);
/// checks docker's per-layer status and returns the two manifest digests.
pub fn push_new_then_sharing(
    d: &Dockerd,
    repo: &str,
    one: &Image,
    two: &Image,
) -> (String, String) {
    d.ok(&["tag", &one.tag, &format!("{repo}:one")]);
    let (one_digest, out) = push(d, &format!("{repo}:one"));
    for l in &one.diff_ids {
        assert_eq!(layer_status(&out, l), "Pushed", "{out}");
    }
    d.ok(&["tag", &two.tag, &format!("{repo}:two")]);
    let (two_digest, out) = push(d, &format!("{repo}:two"));
    assert_eq!(layer_status(&out, &two.diff_ids[0]), "Layer already exists");
    assert_eq!(layer_status(&out, &two.diff_ids[1]), "Layer already exists");
    assert_eq!(layer_status(&out, &two.diff_ids[2]), "Pushed");
    (one_digest, two_digest)
}
