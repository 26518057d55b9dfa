//! Session tokens: what a SCRAM exchange earns. `v1.<principal>.<expires ms>.<signature>`, the
//! principal and signature in URL-safe base64, the signature an HMAC-SHA-256 under the
//! cluster's token key (in the controller's metadata), so any broker checks a token another
//! issued. A token is valid until it expires; deleting a user does not revoke the tokens it
//! holds (at most the token lifetime, one hour by default).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match (forged, or signed under another cluster's key).
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

fn signature(key: &[u8], signed: &str) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), signed.as_bytes())
        .as_ref()
        .to_vec()
}

/// A token for `principal` valid until `expires_ms` (Unix ms).
pub fn mint(key: &[u8], principal: &str, expires_ms: u64) -> String {
    let signed = format!("v1.{}.{expires_ms}", BASE64.encode(principal));
    let mac = BASE64.encode(signature(key, &signed));
    format!("{signed}.{mac}")
}

/// The principal `token` names, if it is signed under `key` and valid at `now_ms`.
pub fn verify(key: &[u8], token: &str, now_ms: u64) -> Result<String, TokenError> {
    let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mac = BASE64.decode(mac).map_err(|_| TokenError::Malformed)?;
    let mut parts = signed.split('.');
    let (Some("v1"), Some(principal), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        signed.as_bytes(),
        &mac,
    )
    .map_err(|_| TokenError::BadSignature)?;
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    if now_ms >= expires {
        return Err(TokenError::Expired);
    }
    let principal = BASE64.decode(principal).map_err(|_| TokenError::Malformed)?;
    String::from_utf8(principal).map_err(|_| TokenError::Malformed)
}

/// A new random token key (32 bytes).
pub fn new_key() -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut key = vec![0u8; crate::controller::metadata::KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("the OS random source");
    key
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_principal_until_it_expires_and_resists_tampering() {
        let key = [7u8; 32];
        let token = mint(&key, "alice.smith", 2_000);
        assert_eq!(verify(&key, &token, 1_999), Ok("alice.smith".to_string()));
        assert_eq!(verify(&key, &token, 2_000), Err(TokenError::Expired));
        assert_eq!(verify(&[8u8; 32], &token, 1_000), Err(TokenError::BadSignature));
        let longer = token.replacen(".2000.", ".9999999.", 1);
        assert_eq!(verify(&key, &longer, 1_000), Err(TokenError::BadSignature));
        let mallory = mint(&key, "mallory", 2_000);
        let (_, mallory_mac) = mallory.rsplit_once('.').unwrap();
        let (alice_signed, _) = token.rsplit_once('.').unwrap();
        let spliced = format!("{alice_signed}.{mallory_mac}");
        assert_eq!(verify(&key, &spliced, 1_000), Err(TokenError::BadSignature));
        assert_eq!(verify(&key, "garbage", 1_000), Err(TokenError::Malformed));
    }
}
