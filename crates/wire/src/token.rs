//! Access tokens: `cmt_<id>_<secret>`.
//!
//! `id` is 12 lowercase hex digits (6 random bytes) and names the token in the
//! table, so AUTH costs exactly one argon2 verification. `secret` is 64 lowercase
//! hex digits (32 random bytes); only its argon2id hash is stored.

use std::fmt;

use zeroize::Zeroizing;

/// Prefix every token starts with.
pub const TOKEN_PREFIX: &str = "cmt_";
const ID_HEX_LEN: usize = 12;
const SECRET_HEX_LEN: usize = 64;

/// A parsed token. `Debug` shows the id only; there is no `Display`, so a token
/// cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: Zeroizing<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token {{ id: {}, secret: <redacted> }}", self.id)
    }
}

/// Why a token string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed token: expected cmt_<12 hex digits>_<64 hex digits>")]
pub struct MalformedToken;

impl Token {
    /// A new random token.
    ///
    /// # Errors
    /// If the OS random source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut id = [0u8; ID_HEX_LEN / 2];
        let mut secret = Zeroizing::new([0u8; SECRET_HEX_LEN / 2]);
        getrandom::fill(&mut id)?;
        getrandom::fill(secret.as_mut())?;
        Ok(Self { id: hex::encode(id), secret: Zeroizing::new(hex::encode(secret.as_ref())) })
    }

    /// Parses `cmt_<id>_<secret>`.
    ///
    /// # Errors
    /// [`MalformedToken`]; the message never repeats the input.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken)?;
        let (id, secret) = rest.split_once('_').ok_or(MalformedToken)?;
        let is_hex =
            |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex(id, ID_HEX_LEN) || !is_hex(secret, SECRET_HEX_LEN) {
            return Err(MalformedToken);
        }
        Ok(Self { id: id.to_string(), secret: Zeroizing::new(secret.to_string()) })
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part, for hashing and verification only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The full token text, to hand to a user or a credentials file.
    pub fn expose(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{TOKEN_PREFIX}{}_{}", self.id, self.secret.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_round_trip_and_redaction() {
        let t = Token::generate().unwrap();
        let text = t.expose();
        assert_eq!(Token::parse(&text).unwrap(), t);
        assert!(!format!("{t:?}").contains(t.secret()));
        for bad in
            ["", "cmt_", "cmt_abc_def", "xyz_000000000000_00", &text.replace("cmt_", "cmx_"), &text.to_uppercase()]
        {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }
}
