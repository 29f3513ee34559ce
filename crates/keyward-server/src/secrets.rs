//! Minting credentials and hashing passwords: the two places the server
//! draws from the OS CSPRNG.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use keyward_core::{EnvTag, KeyFormat, Secret};
use rand_core::{OsRng, RngCore, TryRngCore};

/// A new key or token for `tag`, from the OS CSPRNG.
pub fn mint(format: &KeyFormat, tag: &EnvTag) -> Secret {
    format.generate(tag, &mut OsRng.unwrap_err())
}

/// Argon2id with the crate's default (OWASP-recommended) parameters, as a
/// PHC string that records them, so they can be raised later.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt_bytes = [0u8; 16];
    OsRng.unwrap_err().try_fill_bytes(&mut salt_bytes).ok();
    let salt = SaltString::encode_b64(&salt_bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string. With no hash (an unknown user,
/// or one who never set a password) it checks against a throwaway hash
/// anyway and answers `false`, so that the time taken does not tell which
/// emails exist.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash_password("decoy password").unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(phc.unwrap_or(decoy)) else {
        return false;
    };
    let matched = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matched && phc.is_some()
}

/// 32 bytes from the OS CSPRNG, URL-safe base64: session and invitation
/// secrets, which only ever travel in cookies and links.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    OsRng.unwrap_err().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_salts_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", &parsed)
                .is_err()
        );
        assert!(verify_password("correct horse", Some(&a)));
        assert!(!verify_password("wrong horse", Some(&a)));
        assert!(!verify_password("decoy password", None));
        assert!(!verify_password("correct horse", Some("not a phc string")));
    }

    #[test]
    fn minted_keys_parse_and_differ() {
        let format = KeyFormat::default();
        let tag = EnvTag::parse("live").unwrap();
        let a = mint(&format, &tag);
        let b = mint(&format, &tag);
        assert_ne!(a.expose(), b.expose());
        assert!(format.parse(a.expose()).is_ok());
    }
}
