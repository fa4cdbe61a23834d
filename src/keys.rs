//! Keys the binary makes: client keys (`warden keys new NAME`: the key is printed once, for
//! the operator to hand to the client; Warden keeps only its SHA-256, in the
//! `[[proxy.clients]]` entry printed with it), and the deployment's fingerprint secret when
//! `[proxy].fingerprint_key` is not configured (kept in `[proxy].fingerprint_key_file`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use warden_proxy::ProxySettings;
use warden_proxy::fingerprint::{Fingerprinter, SECRET_BYTES};

/// Random bytes in a key: 192 bits, beyond any dictionary or brute force.
const KEY_RANDOM_BYTES: usize = 24;

/// Prefix of Warden client keys, so secret scanners (and people) can tell them apart.
const KEY_PREFIX: &str = "wk_";

/// A new client key and the config entry that admits it.
pub struct NewKey {
    pub key: String,
    /// Its SHA-256, in hex: what configs and `add_key` actions hold.
    pub key_sha256: String,
    pub config_entry: String,
}

pub fn new_key(name: &str) -> anyhow::Result<NewKey> {
    anyhow::ensure!(
        !name.trim().is_empty() && !name.contains(['"', '\\', '\n']),
        "the client name must be non-empty and hold no quotes, backslashes or line ends"
    );
    let mut random = [0u8; KEY_RANDOM_BYTES];
    getrandom::fill(&mut random).context("reading the system's random source")?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(random));
    let key_sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    let config_entry =
        format!("[[proxy.clients]]\nname = \"{name}\"\nkey_sha256 = \"{key_sha256}\"\n");
    Ok(NewKey {
        key,
        key_sha256,
        config_entry,
    })
}

/// Prints a new key for `name` and its config entry to stdout.
pub fn print_new_key(name: &str) -> anyhow::Result<()> {
    let NewKey {
        key, config_entry, ..
    } = new_key(name)?;
    println!("Client key for {name:?} (shown only now; give it to the client):\n\n    {key}\n");
    println!("Add this to warden.toml (Warden keeps only the key's SHA-256):\n\n{config_entry}");
    Ok(())
}

/// Prints a new digest signing key pair: the seed for the archivers' environment and the
/// public key for `verify_keys`.
pub fn print_signing_key_pair() -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system's random source")?;
    let (seed, public) = warden_sinks::archive::signing::new_key_pair(seed);
    println!(
        "Digest signing key (shown only now; set it on every archiver, never in a file):\n\n    \
         WARDEN_DIGEST_SIGNING_KEY={seed}\n"
    );
    println!(
        "Add this to warden.toml:\n\n[archive]\nsigning_key = \"env:WARDEN_DIGEST_SIGNING_KEY\"\n\
         verify_keys = [\"{public}\"]\n"
    );
    Ok(())
}

/// The fingerprinter the proxy serves with: the configured secret, else the one kept in
/// `fingerprint_key_file`, made (random, `0600`) on first start.
pub fn deployment_fingerprinter(settings: &ProxySettings) -> anyhow::Result<Fingerprinter> {
    if settings.fingerprint_key_configured {
        return Ok(settings.fingerprinter.clone());
    }
    let path = settings.fingerprint_key_file.as_path();
    let secret = match std::fs::read(path) {
        Ok(secret) => secret,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create_secret(path)?,
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", path.display()));
        }
    };
    Fingerprinter::keyed(&secret)
        .map_err(|err| anyhow::anyhow!("proxy.fingerprint_key_file {}: {err}", path.display()))
}

/// Writes a new random secret to `path`, unless another process just did (then reads it).
fn create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).context("reading the system's random source")?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!(
                file = %path.display(),
                "generated this deployment's fingerprint secret (token ids, prompt hashes); \
                 every proxy replica needs the same one: set [proxy].fingerprint_key"
            );
            Ok(secret)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_random_and_its_entry_holds_only_its_hash() {
        let first = new_key("app-prod").expect("key");
        let second = new_key("app-prod").expect("key");
        assert_ne!(first.key, second.key);
        assert!(first.key.starts_with(KEY_PREFIX));
        assert_eq!(first.key.len(), KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES);
        assert!(!first.config_entry.contains(&first.key));
        let hash = hex::encode(Sha256::digest(first.key.as_bytes()));
        assert!(first.config_entry.contains(&hash));
        let parsed: toml::Value = toml::from_str(&first.config_entry).expect("valid TOML");
        assert_eq!(
            parsed["proxy"]["clients"][0]["name"].as_str(),
            Some("app-prod")
        );
        assert!(new_key("bad\"name").is_err());
    }

    #[test]
    fn the_fingerprint_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let config: warden_proxy::ProxyConfig = toml::from_str(&format!(
            "fingerprint_key_file = \"{}\"",
            dir.path().join("data/fingerprint.key").display()
        ))
        .expect("config");
        let settings = config
            .validate(&std::collections::HashMap::new())
            .expect("valid");
        let first = deployment_fingerprinter(&settings).expect("made");
        let again = deployment_fingerprinter(&settings).expect("read back");
        assert_eq!(first.token_id("sk-x"), again.token_id("sk-x"));
        assert_eq!(
            std::fs::read(dir.path().join("data/fingerprint.key"))
                .expect("kept")
                .len(),
            SECRET_BYTES
        );
    }
}
