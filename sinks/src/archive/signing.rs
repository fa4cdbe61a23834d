//! Signed digests: what makes an hourly digest evidence against someone who can write the
//! bucket. Anyone with write access can rewrite a chain and recompute its hashes and digests;
//! nobody without the archiver's signing key can sign them.
//!
//! The archiver signs the exact bytes of each digest it writes (or adopts) with Ed25519
//! (`[archive].signing_key`, a reference to the 32-byte seed, base64); the signature lives
//! beside the digest, at `_warden/digest-signatures/{chain}/{hour}.sig`, as
//! `{"algorithm": "ed25519", "key_id": ..., "signature": ...}`. `warden verify` checks every
//! digest against the public keys in `[archive].verify_keys` (several, so a key can be rolled).
//! Ed25519 signatures are deterministic: two archivers sealing the same hour write the same
//! signature, so writing it put-if-absent is safe.
//!
//! `warden keys signing` makes a key pair.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::STATE_DIR;

/// The only algorithm written and accepted.
const ALGORITHM: &str = "ed25519";

/// A digest's signature file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSignature {
    pub algorithm: String,
    /// Which verify key made it: the first 16 hex characters of the public key's SHA-256.
    pub key_id: String,
    /// Base64 of the 64-byte signature over the digest file's bytes.
    pub signature: String,
}

/// Where the signature of the digest at `digest_key` lives.
pub fn signature_key(digest_key: &Path) -> Path {
    let relative = digest_key
        .as_ref()
        .strip_prefix(&format!("{STATE_DIR}/digests/"))
        .unwrap_or(digest_key.as_ref());
    let relative = relative.strip_suffix(".json").unwrap_or(relative);
    Path::from(format!("{STATE_DIR}/digest-signatures/{relative}.sig"))
}

fn key_id(key: &VerifyingKey) -> String {
    let mut id = hex::encode(Sha256::digest(key.as_bytes()));
    id.truncate(16);
    id
}

/// Signs digests. `Debug` never shows the key.
#[derive(Clone)]
pub struct DigestSigner {
    key: SigningKey,
}

impl fmt::Debug for DigestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DigestSigner(key_id {})",
            key_id(&self.key.verifying_key())
        )
    }
}

impl DigestSigner {
    /// From the base64 of a 32-byte Ed25519 seed.
    pub fn from_base64_seed(seed: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(seed.trim())
            .map_err(|_| "must be the base64 of a 32-byte Ed25519 seed".to_owned())?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be the base64 of a 32-byte Ed25519 seed".to_owned())?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The base64 public key that verifies this signer's signatures.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.key.verifying_key().as_bytes())
    }

    pub fn sign(&self, digest_bytes: &[u8]) -> DigestSignature {
        DigestSignature {
            algorithm: ALGORITHM.to_owned(),
            key_id: key_id(&self.key.verifying_key()),
            signature: BASE64.encode(self.key.sign(digest_bytes).to_bytes()),
        }
    }
}

/// Checks digest signatures against the configured public keys.
#[derive(Debug, Clone)]
pub struct DigestVerifier {
    keys: Vec<VerifyingKey>,
}

impl DigestVerifier {
    /// From base64 public keys; the error names the bad one by position.
    pub fn from_base64_keys(keys: &[String]) -> Result<Self, String> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let bytes: [u8; 32] = BASE64
                    .decode(key.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| format!("[{index}]: must be the base64 of a 32-byte key"))?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| format!("[{index}]: not an Ed25519 public key"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// Why `signature` does not vouch for `digest_bytes`, if it does not.
    pub fn check(&self, digest_bytes: &[u8], signature: &DigestSignature) -> Result<(), String> {
        if signature.algorithm != ALGORITHM {
            return Err(format!(
                "signed with {:?}, not ed25519",
                signature.algorithm
            ));
        }
        let Some(key) = self.keys.iter().find(|key| key_id(key) == signature.key_id) else {
            return Err(format!(
                "signed by key {:?}, which is not in [archive].verify_keys",
                signature.key_id
            ));
        };
        let bytes: [u8; 64] = BASE64
            .decode(&signature.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("the signature is not 64 bytes of base64")?;
        key.verify(digest_bytes, &Signature::from_bytes(&bytes))
            .map_err(|_| "the signature does not match the digest (it was altered)".to_owned())
    }
}

/// A new signing seed and its public key, both base64 (for `warden keys signing`).
pub fn new_key_pair(seed: [u8; 32]) -> (String, String) {
    let signer = DigestSigner {
        key: SigningKey::from_bytes(&seed),
    };
    (BASE64.encode(seed), signer.public_key_base64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_bytes_and_a_known_key() {
        let (seed, public) = new_key_pair([7; 32]);
        let signer = DigestSigner::from_base64_seed(&seed).expect("seed");
        assert_eq!(signer.public_key_base64(), public);
        let verifier = DigestVerifier::from_base64_keys(&[public]).expect("key");
        let signature = signer.sign(b"digest bytes");
        assert!(verifier.check(b"digest bytes", &signature).is_ok());
        assert!(verifier.check(b"digest bytez", &signature).is_err());
        let (other_seed, _) = new_key_pair([8; 32]);
        let stranger = DigestSigner::from_base64_seed(&other_seed).expect("seed");
        let err = verifier
            .check(b"digest bytes", &stranger.sign(b"digest bytes"))
            .expect_err("unknown key");
        assert!(err.contains("verify_keys"), "{err}");
        assert!(!format!("{signer:?}").contains(&seed));
        assert!(DigestSigner::from_base64_seed("c2hvcnQ=").is_err());
        assert_eq!(
            signature_key(&Path::from(
                "_warden/digests/warden.events-0/2026-11-23T10.json"
            ))
            .as_ref(),
            "_warden/digest-signatures/warden.events-0/2026-11-23T10.sig"
        );
    }
}
