//! Generated image content: deterministic tar archives and OCI image layouts
//! (oci-layout, index.json, blobs/sha256/...) written from scratch, so the
//! tests know every byte and digest the clients should carry.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{json, Value};

use super::support::sha256;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A ustar archive of `entries` (`path/` is a directory, else a file), with a
/// fixed mtime and owner so the same input always gives the same digest.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in entries {
        let dir = path.ends_with('/');
        let mut h = [0u8; 512];
        let field = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
            h[at..at + v.len().min(len)].copy_from_slice(&v[..v.len().min(len)]);
        };
        assert!(path.len() < 100, "tar name too long for this writer");
        field(&mut h, 0, 100, path.as_bytes());
        field(
            &mut h,
            100,
            8,
            if dir { b"0000755\0" } else { b"0000644\0" },
        );
        field(&mut h, 108, 8, b"0000000\0");
        field(&mut h, 116, 8, b"0000000\0");
        let size = if dir { 0 } else { data.len() };
        field(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
        field(&mut h, 136, 12, b"14000000000\0"); // 2014-01-01-ish, fixed
        field(&mut h, 148, 8, b"        "); // checksum counts as spaces
        h[156] = if dir { b'5' } else { b'0' };
        field(&mut h, 257, 8, b"ustar\x0000");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        field(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        if !dir {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0); // end-of-archive marker
    out
}

/// gzip without name or timestamp (`-n`), hence reproducible.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A descriptor for `data` of `media_type`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// An OCI image layout directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn create(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Store `data` as a blob and return its descriptor.
    pub fn put(&self, media_type: &str, data: &[u8]) -> Value {
        let d = descriptor(media_type, data);
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
        fs::write(self.dir.join("blobs/sha256").join(hex), data).unwrap();
        d
    }

    /// Write index.json naming `target` as `tag`.
    pub fn tag(&self, target: &Value, tag: &str) {
        let mut entry = target.clone();
        entry["annotations"] = json!({ REF_NAME: tag });
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// index.json, parsed.
    pub fn index(&self) -> Value {
        serde_json::from_slice(&fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// Every blob by digest.
    pub fn blobs(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(self.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                (format!("sha256:{name}"), fs::read(&p).unwrap())
            })
            .collect()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        fs::read(
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    }
}

/// What was generated for one platform.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub arch: String,
    pub manifest: String,
    pub config: String,
    pub layer: String,
}

/// A multi-arch image in an OCI layout: an index over linux/amd64 and
/// linux/arm64 manifests, each with its own config and one gzip layer.
pub struct MultiArch {
    pub layout: Layout,
    pub index_digest: String,
    pub index_bytes: Vec<u8>,
    pub images: Vec<PlatformImage>,
}

impl MultiArch {
    pub fn image(&self, arch: &str) -> &PlatformImage {
        self.images.iter().find(|i| i.arch == arch).unwrap()
    }
}

/// Generate a multi-arch layout in `dir` tagged `tag`; `salt` varies the
/// content so separate tests do not produce the same digests.
pub fn multi_arch(dir: &Path, tag: &str, salt: &str) -> MultiArch {
    let layout = Layout::create(dir);
    let mut entries = vec![];
    let mut images = vec![];
    for arch in ["amd64", "arm64"] {
        let msg = format!("built for linux/{arch} ({salt})\n");
        let raw = tar(&[
            ("etc/", b""),
            ("etc/arch", msg.as_bytes()),
            ("hello.txt", b"hello from berth tests\n"),
        ]);
        let layer = layout.put(OCI_LAYER_GZIP, &gzip(&raw));
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Env": [format!("ARCH={arch}")], "Labels": { "salt": salt } },
            "rootfs": { "type": "layers", "diff_ids": [sha256(&raw)] },
            "history": [{ "created_by": "berth clients test" }]
        });
        let config = layout.put(OCI_CONFIG, config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [layer],
            "annotations": { "org.opencontainers.image.title": format!("{arch} image") }
        });
        let mut m = layout.put(OCI_MANIFEST, manifest.to_string().as_bytes());
        images.push(PlatformImage {
            arch: arch.to_string(),
            manifest: m["digest"].as_str().unwrap().to_string(),
            config: config["digest"].as_str().unwrap().to_string(),
            layer: layer["digest"].as_str().unwrap().to_string(),
        });
        m["platform"] = json!({ "architecture": arch, "os": "linux" });
        entries.push(m);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
    let index_bytes = index.to_string().into_bytes();
    let desc = layout.put(OCI_INDEX, &index_bytes);
    layout.tag(&desc, tag);
    MultiArch {
        index_digest: desc["digest"].as_str().unwrap().to_string(),
        index_bytes,
        layout,
        images,
    }
}
