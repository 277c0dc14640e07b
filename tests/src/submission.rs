//! A provider's submission server, for the sending-account tests: aiosmtpd (PyPI, installed by
//! scripts/install-test-deps.sh) run from `tests/peers/submission_server.py`, with AUTH for one
//! user under TLS (STARTTLS, implicit TLS) or plain. What it accepted is read back as JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::tls::LeafFiles;

pub struct SubmissionServer {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
    out: tempfile::TempDir,
}

impl SubmissionServer {
    /// `mode`: "starttls", "tls" or "plain"; the certificate is `leaf`'s; `user`/`password` is
    /// the one login it accepts.
    pub fn start(mode: &str, leaf: &LeafFiles, user: &str, password: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/submission_server.py");
        let out = tempfile::tempdir().unwrap();
        let port = crate::reserve_port();
        let mut child = Command::new("python3")
            .arg(&script)
            .args([mode, &port.to_string()])
            .arg(&leaf.cert)
            .arg(&leaf.key)
            .args([user, password])
            .arg(out.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/install-test-deps.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        let stdin = child.stdin.take().unwrap();
        Self { child, _stdin: stdin, port, out }
    }

    pub fn host(&self) -> String {
        "127.0.0.1".into()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
    }

    /// What it accepted so far.
    pub fn received(&self) -> Vec<Value> {
        self.files()
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until it accepted `n` messages.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        crate::wait_for("the submission server to accept mail", timeout, || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for SubmissionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
