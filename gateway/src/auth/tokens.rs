//! The admin API's bearer tokens (`admin.tokenFile`): one per line, `#` comments, kept as
//! SHA-256 digests and compared in constant time; the file is re-read when it changes, so a
//! token is rotated without a restart. The admin module's guard asks `check`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use postern_api::Admin;

use super::{Stamp, stamp};
use crate::util::secrets::{Digest, digest, same_digest as same};

/// The tokens of `admin.tokenFile` in force, and the file's identity when read.
#[derive(Default)]
pub struct Tokens {
    current: ArcSwap<Loaded>,
    /// The file last found unusable: not reported again until it changes.
    rejected: Mutex<Option<(PathBuf, Option<Stamp>)>>,
}

#[derive(Default)]
struct Loaded {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    digests: Vec<Digest>,
}

fn read(path: &Path) -> anyhow::Result<Vec<Digest>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("admin.tokenFile {}: {e}", path.display()))?;
    let digests: Vec<Digest> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| digest(l.as_bytes()))
        .collect();
    if digests.is_empty() {
        anyhow::bail!("admin.tokenFile {}: no token in it", path.display());
    }
    Ok(digests)
}

impl Tokens {
    /// Reads the file `config` names (if it changed). On error the tokens in force stay, and
    /// a file that names none refuses every request rather than opening the API.
    pub fn reload(&self, config: &Admin) -> anyhow::Result<bool> {
        let current = self.current.load();
        let path = config.token_file.as_ref();
        let now = path.and_then(|p| stamp(p));
        if current.path.as_ref() == path && (path.is_none() || now == current.stamp) {
            return Ok(false);
        }
        let Some(path) = path else {
            self.current.store(Arc::new(Loaded::default()));
            return Ok(true);
        };
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        let seen = (path.clone(), now);
        if rejected.as_ref() == Some(&seen) {
            return Ok(false);
        }
        match read(path) {
            Ok(digests) => {
                *rejected = None;
                tracing::info!(tokens = digests.len(), "admin token file loaded");
                self.current.store(Arc::new(Loaded { path: Some(path.clone()), stamp: now, digests }));
                Ok(true)
            }
            Err(e) => {
                *rejected = Some(seen);
                if current.path.is_none() {
                    // Configured but unusable from the start: lock the API, never leave it open.
                    self.current.store(Arc::new(Loaded {
                        path: Some(path.clone()),
                        stamp: now,
                        digests: vec![],
                    }));
                }
                Err(e)
            }
        }
    }

    /// `None`: no token file (the API is open); else whether `presented` is one of the tokens.
    pub fn check(&self, presented: Option<&[u8]>) -> Option<bool> {
        let loaded = self.current.load();
        loaded.path.as_ref()?;
        let Some(presented) = presented else { return Some(false) };
        let d = digest(presented);
        Some(loaded.digests.iter().fold(false, |found, t| found | same(t, &d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_file_and_an_unusable_one_locks_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let config = Admin { token_file: Some(path.clone()), ..Admin::default() };
        let tokens = Tokens::default();
        assert_eq!(tokens.check(None), None, "no file configured: open");
        assert!(tokens.reload(&config).is_err(), "missing file");
        assert_eq!(tokens.check(Some(b"anything")), Some(false), "configured but unreadable: locked");
        std::fs::write(&path, "# reviewers\nfirst-token\n\nsecond-token\n").unwrap();
        assert!(tokens.reload(&config).unwrap());
        assert_eq!(tokens.check(Some(b"second-token")), Some(true));
        assert_eq!(tokens.check(Some(b"second-toke")), Some(false));
        assert_eq!(tokens.check(None), Some(false));
        std::fs::write(&path, "rotated-token-with-another-length\n").unwrap();
        assert!(tokens.reload(&config).unwrap());
        assert_eq!(tokens.check(Some(b"first-token")), Some(false));
        assert_eq!(tokens.check(Some(b"rotated-token-with-another-length")), Some(true));
        // A file emptied by mistake keeps the tokens in force.
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(tokens.reload(&config).is_err());
        assert_eq!(tokens.check(Some(b"rotated-token-with-another-length")), Some(true));
    }
}
