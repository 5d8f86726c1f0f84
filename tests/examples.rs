//! The example configs in `config/` stay valid: each must pass validation
//! (with every env variable and file it names present), with no warnings.

use std::path::{Path, PathBuf};

use modelarts_proxy::config;
use modelarts_proxy::credentials::Sources;

/// Every env variable and every file exists, holding a placeholder.
struct Everything;

impl Sources for Everything {
    fn env(&self, name: &str) -> Option<String> {
        // Tracing is configured by the file or the deployment, not by examples.
        if name.starts_with("OTEL_") {
            return None;
        }
        // Endpoints must be URLs (e.g. CCE's HC_CONTAINER_CREDENTIALS_FULL_URI).
        if name.ends_with("_URI") || name.ends_with("_ENDPOINT") {
            return Some("http://127.0.0.1:9/placeholder".into());
        }
        Some("placeholder".into())
    }
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Ok("placeholder\n".into())
    }
    fn home_dir(&self) -> Option<PathBuf> {
        None
    }
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            match config::load(&text, &Everything) {
                Ok(v) => assert!(
                    v.warnings.is_empty(),
                    "{}: {:?}",
                    path.display(),
                    v.warnings
                ),
                Err(e) => panic!("{} is invalid: {e:#?}", path.display()),
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "found only {checked} example configs");
}

#[test]
fn the_reference_config_shows_every_server_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/modelarts-proxy.toml");
    let text = std::fs::read_to_string(path).unwrap();
    for key in config::server::KEYS {
        let shown = text.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))
        });
        assert!(
            shown,
            "config/modelarts-proxy.toml does not show server.{key}"
        );
    }
}

#[test]
fn the_reference_config_shows_every_route_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/modelarts-proxy.toml");
    let text = std::fs::read_to_string(path).unwrap();
    for key in config::ROUTE_KEYS {
        let shown = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[[route.{key}]]"))
        });
        assert!(
            shown,
            "config/modelarts-proxy.toml does not show route.{key}"
        );
    }
}

#[test]
fn the_reference_config_shows_every_credentials_and_telemetry_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/modelarts-proxy.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let all = [
        config::credentials::AKSK_KEYS,
        config::credentials::TOKEN_KEYS,
        config::credentials::APIKEY_KEYS,
        config::credentials::APP_KEYS,
        config::telemetry::KEYS,
    ];
    for key in all.into_iter().flatten() {
        // `iam_endpoint / region` in a comment counts for both.
        let shown = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key} /"))
        });
        assert!(
            shown,
            "config/modelarts-proxy.toml does not show a credentials key {key}"
        );
    }
}

/// The `config.toml: |` blocks of the Kubernetes manifests' ConfigMaps.
fn configmap_configs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_end() == "  config.toml: |" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if !next.is_empty() && !next.starts_with("    ") {
                    break;
                }
                block.push_str(next.strip_prefix("    ").unwrap_or(""));
                block.push('\n');
                lines.next();
            }
            out.push(block);
        }
    }
    out
}

#[test]
fn the_configs_in_the_kubernetes_manifests_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        for text in configmap_configs(&std::fs::read_to_string(&path).unwrap()) {
            match config::load(&text, &Everything) {
                Ok(v) => assert!(
                    v.warnings.is_empty(),
                    "{}: {:?}",
                    path.display(),
                    v.warnings
                ),
                Err(e) => panic!("{} holds an invalid config: {e:#?}", path.display()),
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "found only {checked} configs");
}
