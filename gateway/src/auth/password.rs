//! Password hashes as user bases already have them: argon2 (`$argon2id$`, PHC string), bcrypt
//! (`$2a$`, `$2b$`, `$2y$`) and SHA-crypt (`$5$`, `$6$`). Each check costs what its parameters
//! say (tens of milliseconds by design), so callers run it off the async threads.

use argon2::PasswordVerifier as _;

/// A hash format this gateway can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Argon2,
    Bcrypt,
    ShaCrypt,
}

impl Scheme {
    /// The scheme of `hash`, by its prefix; `None` for anything else (plain text, MD5-crypt,
    /// `{SHA}`: too weak to accept).
    pub fn of(hash: &str) -> Option<Self> {
        if hash.starts_with("$argon2") {
            Some(Self::Argon2)
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            Some(Self::Bcrypt)
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            Some(Self::ShaCrypt)
        } else {
            None
        }
    }
}

/// Whether `password` matches `hash`. A hash that does not parse matches nothing.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    match Scheme::of(hash) {
        Some(Scheme::Argon2) => argon2::Argon2::default().verify_password(password, hash).is_ok(),
        Some(Scheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(Scheme::ShaCrypt) => {
            sha_crypt::PasswordVerifier::verify_password(&sha_crypt::ShaCrypt::default(), password, hash)
                .is_ok()
        }
        None => false,
    }
}

/// An argon2id hash of `password` with the crate's recommended parameters and a random salt
/// (for `postern-gateway hash-password`).
pub fn hash(password: &[u8]) -> anyhow::Result<String> {
    use argon2::PasswordHasher as _;
    let hashed = argon2::Argon2::default()
        .hash_password(password)
        .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))?;
    Ok(hashed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_checks_right_and_wrong_passwords() {
        let argon = hash(b"s3cret").unwrap();
        assert!(argon.starts_with("$argon2id$"));
        // libxcrypt's crypt(3) of "s3cret" (Python's crypt.crypt with these salts), so each check
        // is against another implementation than the one verifying.
        let bcrypt_2b = "$2b$04$abcdefghijklmnopqrstuuLZYjhNQAOdpbzt4WxWlUHjv1wsyH5DG";
        let bcrypt_2y = "$2y$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK";
        let sha256 = "$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.";
        let sha512 = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
        let sha512_rounds = "$6$rounds=5000$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
        for h in [argon.as_str(), bcrypt_2b, bcrypt_2y, sha256, sha512, sha512_rounds] {
            assert!(Scheme::of(h).is_some(), "{h}");
            assert!(verify(h, b"s3cret"), "{h}");
            assert!(!verify(h, b"s3cret!"), "{h}");
            assert!(!verify(h, b""), "{h}");
        }
    }

    #[test]
    fn weak_or_broken_hashes_match_nothing() {
        for h in
            ["s3cret", "{SHA}abc", "$1$salt$hash", "$apr1$x$y", "", "$argon2id$broken", "$2b$04$short", "$6$"]
        {
            assert!(!verify(h, b"s3cret"), "{h:?}");
        }
        assert_eq!(Scheme::of("s3cret"), None);
        assert_eq!(Scheme::of("$apr1$x$y"), None);
    }
}
