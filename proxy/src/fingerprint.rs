//! Keyed fingerprints: what events carry instead of a client's key (`client.token_id`) or
//! its prompt (`request.prompt_hash`).
//!
//! Both are HMAC-SHA256 under a per-deployment secret (`[proxy].fingerprint_key`, an env
//! reference; the binary keeps one in a file when none is configured). A plain hash of a key
//! lets anyone holding the archive confirm a guessed weak key by hashing it, and links the
//! same key across deployments; a keyed one does neither. Every replica of a deployment must
//! use the same secret, or their ids for one key differ. Changing the secret changes every id
//! from then on (see the README: detectors' per-token histories start again, and configured
//! lists naming `tok_…` ids must be renewed; lists naming clients need no change).

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use warden_ingest::TokenId;

/// Hex characters of the HMAC kept in a token id: enough to tell keys apart.
const TOKEN_ID_HEX_CHARS: usize = 16;

/// Bytes of a generated secret.
pub const SECRET_BYTES: usize = 32;

/// Domain separation: a token id and a prompt hash of the same bytes never coincide.
const TOKEN_DOMAIN: &[u8] = b"warden token id v1\0";
const PROMPT_DOMAIN: &[u8] = b"warden prompt hash v1\0";

/// Computes keyed fingerprints. Cheap to clone (the key is shared).
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Arc<Hmac<Sha256>>,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter(***)")
    }
}

impl PartialEq for Fingerprinter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.mac, &other.mac)
    }
}

impl Fingerprinter {
    /// Fingerprints under `secret` (at least 16 bytes).
    pub fn keyed(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 16 {
            return Err(format!(
                "must be at least 16 bytes (got {}); `head -c 32 /dev/urandom | base64` makes one",
                secret.len()
            ));
        }
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: &[u8]) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .expect("HMAC takes keys of any length (longer ones are hashed first)");
        Self { mac: Arc::new(mac) }
    }

    /// Fingerprints under a random secret that lives as long as this value: for tests and
    /// library use; the binary never serves with one (ids would change on restart).
    pub fn ephemeral() -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        for (chunk, random) in secret
            .chunks_mut(16)
            .zip(std::iter::repeat_with(uuid::Uuid::new_v4))
        {
            chunk.copy_from_slice(&random.as_bytes()[..chunk.len()]);
        }
        Self::from_secret(&secret)
    }

    fn tag(&self, domain: &[u8], bytes: &[u8]) -> [u8; 32] {
        let mut mac = (*self.mac).clone();
        mac.update(domain);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// The token id of a presented key.
    pub fn token_id(&self, key: &str) -> TokenId {
        let mut hex = hex::encode(self.tag(TOKEN_DOMAIN, key.as_bytes()));
        hex.truncate(TOKEN_ID_HEX_CHARS);
        TokenId(format!("tok_{hex}"))
    }

    /// The prompt hash of a canonical request (hex, 64 characters).
    pub fn prompt_hash(&self, canonical_request: &[u8]) -> String {
        hex::encode(self.tag(PROMPT_DOMAIN, canonical_request))
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    #[test]
    fn ids_depend_on_the_secret_and_cannot_be_confirmed_by_hashing_a_guess() {
        let a = Fingerprinter::keyed(b"deployment-a-secret-0123456789").expect("key");
        let b = Fingerprinter::keyed(b"deployment-b-secret-0123456789").expect("key");
        let key = "sk-weak";
        assert_eq!(a.token_id(key), a.token_id(key));
        assert_ne!(
            a.token_id(key),
            b.token_id(key),
            "ids do not link deployments"
        );
        let unkeyed = hex::encode(Sha256::digest(key.as_bytes()));
        assert!(!a.token_id(key).0.contains(&unkeyed[..TOKEN_ID_HEX_CHARS]));
        assert_eq!(a.token_id(key).0.len(), 4 + TOKEN_ID_HEX_CHARS);
        assert_ne!(a.prompt_hash(key.as_bytes())[..16], a.token_id(key).0[4..]);
        assert!(Fingerprinter::keyed(b"short").is_err());
        assert_ne!(
            Fingerprinter::ephemeral().token_id(key),
            Fingerprinter::ephemeral().token_id(key)
        );
    }
}
