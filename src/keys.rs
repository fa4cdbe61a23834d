//! `warden keys new NAME`: makes a client key. The key is printed once, for the operator to
//! hand to the client; Warden keeps only its SHA-256, in the `[[proxy.clients]]` entry
//! printed with it.

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Random bytes in a key: 192 bits, beyond any dictionary or brute force.
const KEY_RANDOM_BYTES: usize = 24;

/// Prefix of Warden client keys, so secret scanners (and people) can tell them apart.
const KEY_PREFIX: &str = "wk_";

/// A new client key and the config entry that admits it.
pub struct NewKey {
    pub key: String,
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
    Ok(NewKey { key, config_entry })
}

/// Prints a new key for `name` and its config entry to stdout.
pub fn print_new_key(name: &str) -> anyhow::Result<()> {
    let NewKey { key, config_entry } = new_key(name)?;
    println!("Client key for {name:?} (shown only now; give it to the client):\n\n    {key}\n");
    println!("Add this to warden.toml (Warden keeps only the key's SHA-256):\n\n{config_entry}");
    Ok(())
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
}
