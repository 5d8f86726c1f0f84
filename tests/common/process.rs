//! The binary as a user runs it: a clean environment, its output line by
//! line, SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::TEST_DEADLINE;

pub const BIN: &str = env!("CARGO_BIN_EXE_modelarts-proxy");

pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("modelarts-proxy-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command with a clean environment: no SDK credentials, an empty HOME.
pub fn cmd(home: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// Spawns with piped stderr and stdout; lines arrive on the returned channels.
pub fn spawn(mut c: Command) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    (child, out, err)
}

/// The address in a startup line such as `listening on http://127.0.0.1:PORT`.
pub fn addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Waits for a line containing `marker`, collecting every line read into `seen`.
pub fn wait_for(rx: &mpsc::Receiver<String>, marker: &str, seen: &mut Vec<String>) -> String {
    let deadline = std::time::Instant::now() + TEST_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {marker:?}; saw:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains(marker) {
            return line;
        }
    }
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap()
}
