//! The Helm chart (helm/berth) and the kustomize manifests (k8s/): linted,
//! rendered, checked by yamllint and against the Kubernetes schemas, and the
//! config.yml they produce accepted by the real `berth`. Tools: see
//! tests/deploy/tools.rs (tests/run.sh installs them).

mod common;
#[path = "deploy/served.rs"]
mod served;
#[path = "deploy/tools.rs"]
mod tools;

use serde_json::Value;
use tools::*;

/// The chart's example profiles, one per storage driver.
const PROFILES: [&str; 3] = [
    "ci/filesystem-values.yaml",
    "ci/s3-values.yaml",
    "ci/azure-values.yaml",
];

fn profile(storage: &str) -> String {
    format!("ci/{storage}-values.yaml")
}

#[test]
fn helm_lint_strict_passes_for_every_profile() {
    for values in PROFILES.iter().copied().chain([""]) {
        let mut cmd = helm();
        cmd.args(["lint", "--strict"]).arg(chart());
        if !values.is_empty() {
            cmd.arg("--values").arg(chart().join(values));
        }
        let out = run_ok(cmd, "");
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

/// The sources too: the chart's values files and every kustomize file
/// (config.yml included, which the rendered output only embeds as text).
#[test]
fn source_files_pass_yamllint() {
    let mut files: Vec<std::path::PathBuf> = ["Chart.yaml", "values.yaml"]
        .into_iter()
        .chain(PROFILES)
        .map(|f| chart().join(f))
        .collect();
    let mut dirs = vec![repo().join("k8s")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 15, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        yamllint(&file.display().to_string(), &text);
    }
}

#[test]
fn rendered_profiles_pass_yamllint_and_the_kubernetes_schemas() {
    let expected: [(&str, &[&str], &[&str]); 3] = [
        (
            "filesystem",
            &[
                "persistentvolumeclaim",
                "deployment",
                "service",
                "ingress",
                "secret",
            ],
            &["horizontalpodautoscaler", "poddisruptionbudget"],
        ),
        (
            "s3",
            &["horizontalpodautoscaler", "poddisruptionbudget", "ingress"],
            &["persistentvolumeclaim"],
        ),
        (
            "azure",
            &["poddisruptionbudget", "deployment"],
            &["persistentvolumeclaim", "ingress"],
        ),
    ];
    for (storage, present, absent) in expected {
        let yaml = render(&profile(storage));
        yamllint(storage, &yaml);
        let validated = kubernetes_validate(storage, &yaml);
        for kind in present {
            assert!(validated.iter().any(|k| k == kind), "{storage}: no {kind}");
        }
        for kind in absent {
            assert!(!validated.iter().any(|k| k == kind), "{storage}: {kind}");
        }
        let docs = documents(&yaml);
        let deployment = &get_kind(&docs, "Deployment")["spec"];
        if storage == "filesystem" {
            assert_eq!(deployment["strategy"]["type"], "Recreate");
        } else {
            assert_eq!(deployment["strategy"]["type"], "RollingUpdate");
        }
        if storage == "s3" {
            assert!(deployment["replicas"].is_null(), "the HPA owns the count");
        }
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap();
            let lowered = kind.to_lowercase();
            assert!(
                validated.contains(&lowered) || CRD_KINDS.contains(&kind),
                "{storage}: {kind} was not validated"
            );
        }
    }
}

/// ServiceMonitor has no bundled schema (a CRD): check that it scrapes the
/// Service's metrics port, which serves Berth's metrics path.
#[test]
fn service_monitor_scrapes_the_metrics_port() {
    let docs = documents(&render(&profile("filesystem")));
    let monitor = get_kind(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = get_kind(&docs, "Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&service["metadata"]["labels"][k], v, "selector {k}");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the endpoint names a Service port");
    let config = Pod::from_manifests(&docs).config_text;
    assert!(
        config.contains(&format!("addr: :{}", port["port"])),
        "http.debug.addr is the scraped port: {config}"
    );
    assert!(config.contains(&format!("path: {}", endpoint["path"].as_str().unwrap())));
}

#[test]
fn rendered_configs_pass_berth_config_check() {
    let expected = [
        (
            "filesystem",
            "rootdirectory: /var/lib/registry",
            "htpasswd:",
        ),
        ("s3", "bucket: berth-images", "token_server:"),
        (
            "azure",
            "accountname: berthimages",
            "blobdescriptor: inmemory",
        ),
    ];
    for (storage, driver, feature) in expected {
        let docs = documents(&render(&profile(storage)));
        let pod = Pod::from_manifests(&docs);
        assert!(pod.config_text.contains(driver), "{}", pod.config_text);
        assert!(pod.config_text.contains(feature), "{}", pod.config_text);
        let out = pod.config_check();
        assert!(
            out.status.success(),
            "{storage}: berth config check refused the rendered config: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pod.config_text
        );
    } // The chart's defaults, and the token server open to anonymous pulls only.
    let anonymous: &[&str] = &[
        "auth.type=token",
        "auth.token.anonymous=true",
        "auth.token.acl[0].match.account=",
        "auth.token.acl[0].actions={pull}",
    ];
    for set in [&[][..], anonymous] {
        let docs = documents(&helm_template(None, set).unwrap());
        let out = Pod::from_manifests(&docs).config_check();
        assert!(
            out.status.success(),
            "{set:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Credentials given in values land in the chart's Secret and reach Berth as
/// REGISTRY_* variables; the ConfigMap never holds them.
#[test]
fn credentials_reach_the_pod_from_secrets_only() {
    // (--set pairs, variables the pod must get with their values)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 2] = [
        (
            &[
                "storage.type=azure",
                "storage.azure.accountname=berthimages",
                "storage.azure.container=images",
                "storage.azure.credentials.type=client_secret",
                "storage.azure.credentials.clientid=client-1",
                "storage.azure.credentials.tenantid=tenant-1",
                "storage.azure.credentials.clientSecret=azure-client-secret-1",
                "redis.addr=redis:6379",
                "redis.password=redis-password-1",
                "replicaCount=2",
                "storage.delete.enabled=true",
            ],
            &[
                (
                    "REGISTRY_STORAGE_AZURE_CREDENTIALS_SECRET",
                    "azure-client-secret-1",
                ),
                ("REGISTRY_REDIS_PASSWORD", "redis-password-1"),
            ],
        ),
        (
            &[
                "storage.type=s3",
                "storage.s3.region=eu-west-1",
                "storage.s3.bucket=images",
                "storage.s3.accessKey=access-key-1",
                "storage.s3.secretKey=secret-key-1",
            ],
            &[
                ("REGISTRY_STORAGE_S3_ACCESSKEY", "access-key-1"),
                ("REGISTRY_STORAGE_S3_SECRETKEY", "secret-key-1"),
            ],
        ),
    ];
    for (set, expected) in cases {
        let docs = documents(&helm_template(None, set).unwrap());
        let pod = Pod::from_manifests(&docs);
        for (var, value) in expected {
            assert!(
                pod.env.iter().any(|(k, v)| k == var && v == value),
                "{var} from the chart's Secret: {:?}",
                pod.env
            );
            assert!(!pod.config_text.contains(value), "{value} in the ConfigMap");
        }
        let out = pod.config_check();
        assert!(
            out.status.success(),
            "{set:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The config check is real: the same pod with one credential missing from
/// its environment is refused (Azure's account key must be base64).
#[test]
fn config_check_refuses_a_broken_credential() {
    let docs = documents(&render(&profile("azure")));
    let mut pod = Pod::from_manifests(&docs);
    let key = pod
        .env
        .iter_mut()
        .find(|(k, _)| k == "REGISTRY_STORAGE_AZURE_ACCOUNTKEY")
        .expect("the account key comes from the Secret");
    key.1 = "not base64!".into();
    let out = pod.config_check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.azure.accountkey"));
}

#[test]
fn bad_values_are_refused_with_a_message_naming_the_fix() {
    let cases: [(&[&str], &str); 7] = [
        (&["storage.type=ftp"], "storage.type"),
        (
            &["replicaCount=2"],
            "storage.type filesystem allows one replica",
        ),
        (
            &["autoscaling.enabled=true"],
            "storage.type filesystem allows one replica",
        ),
        (
            &["storage.type=s3", "storage.s3.region=eu-west-1"],
            "storage.s3.region and storage.s3.bucket",
        ),
        (&["auth.type=htpasswd"], "auth.users or auth.existingSecret"),
        (
            &["auth.type=htpasswd", "auth.users.ci=plain"],
            "auth.users.ci",
        ),
        (
            &[
                "storage.type=azure",
                "storage.azure.accountname=a",
                "storage.azure.container=images",
                "replicaCount=2",
                "storage.delete.enabled=true",
            ],
            "set redis.addr",
        ),
    ];
    for (set, message) in cases {
        let err = helm_template(None, set).expect_err(&format!("{set:?} was accepted"));
        assert!(err.contains(message), "{set:?}: {err}");
    }
    // The same filesystem profile is fine on a ReadWriteMany volume.
    helm_template(
        None,
        &[
            "replicaCount=2",
            "storage.filesystem.persistence.accessModes={ReadWriteMany}",
        ],
    )
    .unwrap();
}

/// Where REGISTRY_HTTP_SECRET comes from, per httpSecret setting. (The kept-on-
/// upgrade path needs a cluster: `helm template` cannot `lookup`, so it
/// generates anew on each render, which is what the last case shows.)
#[test]
fn http_secret_comes_from_the_given_secret_or_the_charts_own() {
    fn secret_env(docs: &[Value]) -> (String, String) {
        let container = &get_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let var = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "REGISTRY_HTTP_SECRET")
            .expect("REGISTRY_HTTP_SECRET");
        let r = &var["valueFrom"]["secretKeyRef"];
        (
            r["name"].as_str().unwrap().into(),
            r["key"].as_str().unwrap().into(),
        )
    }
    let given = documents(
        &helm_template(
            None,
            &[
                "httpSecret.existingSecret=mine",
                "httpSecret.existingSecretKey=k",
            ],
        )
        .unwrap(),
    );
    assert_eq!(secret_env(&given), ("mine".into(), "k".into()));
    assert!(
        secret_data(&given, "berth").is_none_or(|d| !d.contains_key("http-secret")),
        "no generated secret beside an existing one"
    );

    let valued = documents(&helm_template(None, &["httpSecret.value=shared-by-all"]).unwrap());
    assert_eq!(secret_env(&valued), ("berth".into(), "http-secret".into()));
    assert_eq!(
        secret_data(&valued, "berth").unwrap()["http-secret"],
        "shared-by-all"
    );

    let generated = |docs: &[Value]| -> String {
        secret_data(docs, "berth").unwrap()["http-secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = generated(&documents(&helm_template(None, &[]).unwrap()));
    let second = generated(&documents(&helm_template(None, &[]).unwrap()));
    assert_eq!(first.len(), 64);
    assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(first, second, "helm template has no cluster to look up");
}

#[test]
fn ingress_lets_layers_through_nginx() {
    let docs = documents(&render(&profile("filesystem")));
    let ingress = get_kind(&docs, "Ingress");
    let a = &ingress["metadata"]["annotations"];
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-body-size"], "0");
    assert_eq!(
        a["nginx.ingress.kubernetes.io/proxy-request-buffering"],
        "off"
    );
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "900");
    assert_eq!(
        ingress["spec"]["tls"][0]["hosts"][0],
        "registry.example.com"
    );
    // The chart's annotations give way to the user's.
    let overridden = documents(
        &helm_template_args(&[
            "--values".into(),
            chart().join(profile("filesystem")).to_str().unwrap().into(),
            "--set-string".into(),
            "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=3600".into(),
        ])
        .unwrap(),
    );
    let a = &get_kind(&overridden, "Ingress")["metadata"]["annotations"];
    assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600");
}

/// A config change changes the pod template (so pods roll); an unrelated
/// value does not.
#[test]
fn config_changes_roll_the_pods() {
    let checksum = |set: &[&str]| -> String {
        let docs = documents(&helm_template(None, set).unwrap());
        get_kind(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base = checksum(&[]);
    assert_eq!(base, checksum(&["podLabels.team=a"]));
    assert_ne!(base, checksum(&["log.level=debug"]));
}

#[test]
fn kustomize_base_and_overlays_validate_and_pass_config_check() {
    for (dir, driver) in [
        ("base", "filesystem:"),
        ("overlays/s3", "s3:"),
        ("overlays/azure", "azure:"),
    ] {
        let yaml = kustomize(dir);
        yamllint(dir, &yaml);
        let validated = kubernetes_validate(dir, &yaml);
        let docs = documents(&yaml);
        assert_eq!(validated.len(), docs.len(), "{dir}: {:?}", kinds(&docs));
        let replicated = dir != "base";
        assert_eq!(
            find(&docs, "PersistentVolumeClaim").is_none(),
            replicated,
            "{dir}: a volume only for filesystem"
        );
        assert_eq!(find(&docs, "PodDisruptionBudget").is_some(), replicated);
        let pod = Pod::from_manifests(&docs);
        assert!(
            pod.config_text.contains(driver),
            "{dir}: {}",
            pod.config_text
        );
        let out = pod.config_check();
        assert!(
            out.status.success(),
            "{dir}: berth config check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// SIGTERM fits the pod's grace period: the preStop pause plus Berth's drain
/// (plus the webhook and debug listener drains, at most 6 s) end before the
/// kubelet's SIGKILL; and no Service link variable reaches Berth's
/// `REGISTRY_*` configuration.
#[test]
fn shutdown_fits_the_grace_period() {
    for set in [&[][..], &["terminationGracePeriodSeconds=30"][..]] {
        let docs = documents(&helm_template(None, set).unwrap());
        let pod = &get_kind(&docs, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"], false);
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let pause: u64 = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let config = Pod::from_manifests(&docs).config_text;
        let drain: u64 = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("draintimeout: "))
            .and_then(|v| v.strip_suffix('s'))
            .expect("http.draintimeout in the generated config")
            .parse()
            .unwrap();
        assert!(drain > 0, "{config}");
        assert!(
            pause + drain + 6 < grace,
            "{set:?}: {pause} + {drain} + 6 >= {grace}"
        );
    }
}
