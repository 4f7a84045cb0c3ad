//! The grid key: the shared secret that signs every mesh packet.

use std::path::{Path, PathBuf};

use crate::wire::GridKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("grid key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot create grid key {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the key at `path`: a private file of at least 32 bytes.
pub fn read(path: &Path) -> Result<GridKey, KeyError> {
    let invalid = |reason| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = gemba_core::secret::read_key_file(path).map_err(invalid)?;
    GridKey::new(bytes).map_err(invalid)
}

/// Reads `<data_dir>/grid.key`, creating it with 32 random bytes (hex) on
/// first start. Returns the key and whether it was created.
pub fn read_or_create(data_dir: &Path) -> Result<(GridKey, PathBuf, bool), KeyError> {
    let path = data_dir.join("grid.key");
    if path.exists() {
        return read(&path).map(|k| (k, path, false));
    }
    let create = |source| KeyError::Create {
        path: path.clone(),
        source,
    };
    let raw = gemba_core::secret::random32().map_err(create)?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    gemba_core::secret::create_private(&path, &hex).map_err(create)?;
    let key = GridKey::new(hex.into_bytes()).expect("64 hex characters are a valid key");
    Ok((key, path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_is_reused_and_short_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("gemba-key-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (_, path, created) = read_or_create(&dir).unwrap();
        assert!(created);
        let (_, _, created_again) = read_or_create(&dir).unwrap();
        assert!(!created_again);
        std::fs::write(&path, "short\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
