//! SMTP AUTH's users: who they are (`users.rs`, the users file), how a password is checked
//! (`password.rs`), and `Directory`, which holds the current users, re-reads the file when it
//! changes, and remembers recent good logins so that a client logging in for every message does
//! not pay a password hash each time.

pub mod kubernetes;
pub mod password;
pub mod tokens;
pub mod users;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use postern_api::AuthConfig;

pub use users::User;

/// How long a good login is remembered (as an HMAC of the password under a key that lives only
/// in this process): the same user and password within this time skip the hash.
const REMEMBER_FOR: Duration = Duration::from_secs(300);

/// A file's identity as far as reloading cares: modified time and length (the users file here,
/// the admin token file in `tokens.rs`).
pub(crate) type Stamp = (SystemTime, u64);

/// Which file, in which state.
type FileVersion = (Option<PathBuf>, Option<Stamp>);

struct Loaded {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    users: HashMap<String, Arc<User>>,
}

struct Remembered {
    /// The user's hash when the login was checked: a changed password forgets the login.
    hash: String,
    tag: Vec<u8>,
    at: Instant,
}

pub struct Directory {
    current: ArcSwap<Loaded>,
    /// The file (path, stamp) last found unusable: not re-read (nor reported) until it changes.
    rejected: Mutex<Option<FileVersion>>,
    recent: Mutex<HashMap<String, Remembered>>,
    key: ring::hmac::Key,
}

pub(crate) fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

fn read(path: Option<&PathBuf>) -> anyhow::Result<Loaded> {
    let Some(path) = path else {
        return Ok(Loaded { path: None, stamp: None, users: HashMap::new() });
    };
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("auth.usersFile: cannot read {}", path.display()))?;
    let users = users::parse(&text).with_context(|| format!("auth.usersFile {}", path.display()))?;
    Ok(Loaded { path: Some(path.clone()), stamp, users })
}

impl Directory {
    /// Reads `auth.usersFile` (none: no users); an unusable file is an error naming the line.
    pub fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        let loaded = read(config.users_file.as_ref())?;
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no random numbers for the login cache key"))?;
        Ok(Self {
            current: ArcSwap::from_pointee(loaded),
            rejected: Mutex::default(),
            recent: Mutex::default(),
            key,
        })
    }

    /// Re-reads the users file when its path or its content changed. `Ok(true)`: reloaded.
    /// On error the users in force stay, and the same unusable file is not reported again.
    pub fn reload(&self, config: &AuthConfig) -> anyhow::Result<bool> {
        let current = self.current.load();
        let path = config.users_file.as_ref();
        let now = path.and_then(|p| stamp(p));
        if current.path.as_ref() == path && (path.is_none() || now == current.stamp) {
            return Ok(false);
        }
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        let seen = (path.cloned(), now);
        if rejected.as_ref() == Some(&seen) {
            return Ok(false);
        }
        let loaded = match read(path) {
            Ok(l) => l,
            Err(e) => {
                *rejected = Some(seen);
                return Err(e);
            }
        };
        *rejected = None;
        tracing::info!(users = loaded.users.len(), "users file loaded");
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.current.load().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user `name` if `password` is theirs. The hash is checked on a blocking thread. For
    /// a name that is no user, the password is checked against another user's hash and the
    /// answer thrown away: a login costs the same whether the user exists or not (with the
    /// parameters the file really uses), so timing tells no names.
    pub async fn authenticate(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let current = self.current.load();
        let user = current.users.get(name).cloned();
        if let Some(u) = &user
            && let Some(r) = self.lock_recent().get(name)
            && r.hash == u.hash
            && r.at.elapsed() < REMEMBER_FOR
            && ring::hmac::verify(&self.key, password, &r.tag).is_ok()
        {
            return user;
        }
        let hash = match &user {
            Some(u) => u.hash.clone(),
            None => current.users.values().next()?.hash.clone(),
        };
        drop(current);
        let given = password.to_vec();
        let matched =
            tokio::task::spawn_blocking(move || password::verify(&hash, &given)).await.unwrap_or(false);
        let user = user.filter(|_| matched)?;
        let tag = ring::hmac::sign(&self.key, password).as_ref().to_vec();
        let remembered = Remembered { hash: user.hash.clone(), tag, at: Instant::now() };
        self.lock_recent().insert(name.to_string(), remembered);
        Some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(dir: &tempfile::TempDir, text: &str) -> AuthConfig {
        let path = dir.path().join("users");
        std::fs::write(&path, text).unwrap();
        AuthConfig { users_file: Some(path), ..AuthConfig::default() }
    }

    #[tokio::test]
    async fn logins_are_checked_remembered_and_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = password::hash(b"one").unwrap();
        let config = config_with(&dir, &format!("alice:{first}\n"));
        let users = Directory::load(&config).unwrap();
        assert_eq!(users.len(), 1);
        assert!(users.authenticate("alice", b"one").await.is_some());
        // Remembered: the same login again is answered from the cache, a wrong one is not.
        assert!(users.authenticate("alice", b"one").await.is_some());
        assert!(users.authenticate("alice", b"two").await.is_none());
        assert!(users.authenticate("bob", b"one").await.is_none());
        assert!(!users.reload(&config).unwrap(), "unchanged file, no reload");

        // A new password in the file: the remembered login no longer counts.
        let second = password::hash(b"two").unwrap();
        let config = config_with(&dir, &format!("alice:{second}\nbob:{second}\n"));
        assert!(users.reload(&config).unwrap());
        assert!(users.authenticate("alice", b"one").await.is_none());
        assert!(users.authenticate("alice", b"two").await.is_some());
        assert!(users.authenticate("bob", b"two").await.is_some());

        // A broken file keeps the users in force, and is reported once.
        let broken = config_with(&dir, "alice:plaintext-password-line\n");
        let e = users.reload(&broken).unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        assert!(!format!("{e:#}").contains("plaintext-password-line"), "{e:#}");
        assert!(!users.reload(&broken).unwrap());
        assert!(users.authenticate("bob", b"two").await.is_some());
    }
}
