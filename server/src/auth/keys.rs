//! The server's key material in the data directory, and randomness.
//!
//! Two files, created on first start with mode 0600 and loaded on every later start:
//! `token-key.der` (Ed25519 PKCS#8, signs access tokens and master data) and `nonce-key.bin`
//! (32 random bytes, the HMAC key of the stateless DPoP nonces).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use aws_lc_rs::signature::Ed25519KeyPair;

/// File name of the token signing key.
pub(crate) const TOKEN_KEY_FILE: &str = "token-key.der";

/// File name of the nonce HMAC key.
pub(crate) const NONCE_KEY_FILE: &str = "nonce-key.bin";

/// The raw key material, as read from (or first written to) the data directory.
pub(crate) struct KeyFiles {
    /// Ed25519 PKCS#8 DER.
    pub(crate) token_pkcs8: Vec<u8>,
    /// 32 random bytes.
    pub(crate) nonce_key: [u8; 32],
}

impl KeyFiles {
    /// Loads both keys from `data_dir`, creating each that is missing.
    pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let token_path = data_dir.join(TOKEN_KEY_FILE);
        let token_pkcs8 = if token_path.exists() {
            std::fs::read(&token_path)
                .with_context(|| format!("reading {}", token_path.display()))?
        } else {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let document = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("generating the token key"))?;
            write_private(&token_path, document.as_ref())?;
            tracing::info!(path = %token_path.display(), "created the token signing key");
            document.as_ref().to_vec()
        };
        let nonce_path = data_dir.join(NONCE_KEY_FILE);
        let nonce_key = if nonce_path.exists() {
            let bytes = std::fs::read(&nonce_path)
                .with_context(|| format!("reading {}", nonce_path.display()))?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("{} is not 32 bytes", nonce_path.display()))?
        } else {
            let key = random_bytes::<32>();
            write_private(&nonce_path, &key)?;
            key
        };
        Ok(Self { token_pkcs8, nonce_key })
    }

    /// Fresh keys that live only in memory (tests).
    #[cfg(test)]
    pub(crate) fn generate() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).expect("generating a key");
        Self { token_pkcs8: document.as_ref().to_vec(), nonce_key: random_bytes::<32>() }
    }
}

/// `N` bytes from the system's secure random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    bytes
}

/// Writes a secret file readable by its owner only, replacing any earlier one.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes, false)
}

/// Writes a new key file readable by its owner only; refuses to overwrite.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes, true)
}

fn write_file(path: &Path, bytes: &[u8], create_new: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}
