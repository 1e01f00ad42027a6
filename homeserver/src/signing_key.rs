//! The server's ed25519 signing key, which signs every event it creates.
//! Stored as one line `ed25519 <key version> <base64 PKCS#8>`, mode 0600.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ruma::signatures::Ed25519KeyPair;

/// Writes a new key to `path`; refuses to overwrite an existing one.
pub fn generate(path: &Path) -> anyhow::Result<()> {
    let document = Ed25519KeyPair::generate();
    let version = crate::auth::tokens::random_string(6);
    let line = format!("ed25519 {version} {}\n", STANDARD.encode(&*document));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating signing key {}", path.display()))?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

/// Reads the key written by [`generate`].
pub fn load(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading signing key {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing signing key {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Ed25519KeyPair> {
    let mut fields = text.split_whitespace();
    let (Some("ed25519"), Some(version), Some(encoded)) = (fields.next(), fields.next(), fields.next()) else {
        anyhow::bail!("expected `ed25519 <version> <base64>`");
    };
    let document = STANDARD.decode(encoded)?;
    Ed25519KeyPair::from_der(&document, version.to_owned()).map_err(|err| anyhow::anyhow!("{err}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_key_loads_and_is_private() {
        let dir = std::env::temp_dir().join(format!("hs-key-{}", crate::auth::tokens::random_string(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signing.key");
        super::generate(&path).unwrap();
        assert!(super::generate(&path).is_err(), "an existing key is never overwritten");
        let key = super::load(&path).unwrap();
        assert_eq!(key.version().len(), 6);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
