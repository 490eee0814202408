//! The keys, from YAML and from `REGISTRY_*`: what the server says it runs
//! with, and a one-line error naming the key for a bad value.

use std::process::Command;

use crate::common::Berth;

#[test]
fn limits_come_from_registry_env_variables() {
    let berth = Berth::start_with_env(
        |root, addr| super::support::config(root, addr, "  maxconnections: 9\n"),
        &[
            ("REGISTRY_HTTP_MAXCONNECTIONS", "7"),
            ("REGISTRY_HTTP_DRAINTIMEOUT", "4s"),
            ("REGISTRY_HTTP_TIMEOUTS_READHEADER", "3s"),
            ("REGISTRY_HTTP_TIMEOUTS_IDLE", "2m"),
            ("REGISTRY_HTTP_TIMEOUTS_STALL", "0"),
        ],
    );
    let line = berth
        .logs()
        .lines()
        .find(|l| l.contains("connection limits"))
        .unwrap_or_else(|| panic!("no limits line: {}", berth.logs()))
        .to_string();
    for want in [
        "max_connections=7",
        "read_header_timeout=Some(3s)",
        "idle_timeout=Some(120s)",
        "stall_timeout=None",
        "drain_timeout=4s",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

#[test]
fn the_defaults_are_logged_at_start() {
    let berth = Berth::start();
    let line = berth
        .logs()
        .lines()
        .find(|l| l.contains("connection limits"))
        .unwrap_or_else(|| panic!("no limits line: {}", berth.logs()))
        .to_string();
    for want in [
        "read_header_timeout=Some(30s)",
        "idle_timeout=Some(75s)",
        "stall_timeout=Some(60s)",
        "drain_timeout=20s",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

#[test]
fn a_bad_limit_is_a_one_line_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yml");
    std::fs::write(&file, "version: 0.1\nstorage:\n  inmemory: {}\n").unwrap();
    for (var, value) in [
        ("REGISTRY_HTTP_TIMEOUTS_IDLE", "60"),
        ("REGISTRY_HTTP_DRAINTIMEOUT", "soon"),
        ("REGISTRY_HTTP_MAXCONNECTIONS", "0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("serve")
            .arg(&file)
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let named = err.contains(var) || err.contains("http.maxconnections");
        assert!(named, "{var}={value}: {err}");
    }
}
