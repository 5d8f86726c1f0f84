//! Config parsing and validation on arbitrary text: never a panic; every
//! problem has a message; a valid config's routes are sorted longest
//! prefix first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelarts_proxy::config;
use modelarts_proxy::credentials::Sources;

/// Every variable is set; no file exists.
struct AnyEnv;

impl Sources for AnyEnv {
    fn env(&self, _name: &str) -> Option<String> {
        Some("fuzz-value".into())
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} (fuzzing)", path.display()),
        ))
    }
    fn home_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::load(text, &AnyEnv) {
        Ok(v) => {
            let lens: Vec<usize> = v
                .config
                .routes
                .iter()
                .map(|r| r.match_prefix.len())
                .collect();
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{lens:?}");
            assert!(!v.config.routes.is_empty());
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            assert!(problems.iter().all(|p| !p.message.is_empty()));
        }
    }
});
