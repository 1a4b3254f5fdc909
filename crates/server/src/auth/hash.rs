//! Argon2id hashing of token secrets, as PHC strings.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id cost for newly created token hashes. Verification always uses the
/// parameters recorded in the stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for HashParams {
    /// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self { m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 }
    }
}

/// Hashing failed (bad parameters or no randomness for the salt).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot hash token secret: {0}")]
pub struct HashError(String);

impl HashError {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

/// Hashes `secret` to a PHC string with a fresh random salt.
///
/// # Errors
/// [`HashError`] for parameters argon2 refuses.
pub fn hash_secret(secret: &str, params: HashParams) -> Result<String, HashError> {
    let params =
        Params::new(params.m_cost_kib, params.t_cost, params.p_cost, None).map_err(|e| HashError(e.to_string()))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes())
        .map_err(|e| HashError(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `secret` matches the PHC string. A malformed stored hash never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let params = HashParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
        let h = hash_secret("s3cret", params).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3creT", &h));
        assert!(!verify_secret("s3cret", "not a phc string"));
        assert!(hash_secret("x", HashParams { m_cost_kib: 1, t_cost: 1, p_cost: 1 }).is_err());
    }
}
