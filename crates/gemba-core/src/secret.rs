//! Files that hold secrets (the grid key): private to their owner and long
//! enough, checked the same way by `gemba config check` and `gemba run`.

use std::path::Path;

/// The fewest bytes a grid key file may hold (after trimming whitespace).
pub const MIN_KEY_FILE_LEN: usize = 32;

/// 32 bytes from the operating system's random source.
pub fn random32() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    Ok(raw)
}

/// Creates `dir` and the directories above it that are missing, each
/// open to its owner only (0700) whatever the umask; directories that
/// exist keep their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` empty and open to its owner only (0600) if it does not
/// exist; a file that exists is left as it is.
pub fn touch_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` (and its directory, private) holding `line`, readable
/// by its owner only; fails if it exists.
pub fn create_private(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    writeln!(options.open(path)?, "{line}")
}

/// Refuses a file that its group or others may read or write.
pub fn check_private(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is open to its group or others (mode {mode:04o}); a secret must be private: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// The key a grid key file holds: private, and at least
/// [`MIN_KEY_FILE_LEN`] bytes once a trailing newline is trimmed.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    check_private(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // A key file written by hand usually ends with a newline; it is not
    // part of the key.
    let key = match std::str::from_utf8(&bytes) {
        Ok(text) => text.trim().as_bytes().to_vec(),
        Err(_) => bytes,
    };
    if key.len() < MIN_KEY_FILE_LEN {
        return Err(format!(
            "{} holds {} bytes; a grid key must be at least {MIN_KEY_FILE_LEN} (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {})",
            path.display(),
            key.len(),
            path.display()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gemba-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap().len(), 32);
        std::fs::write(&path, "only-sixteen-byt\n").unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(err.contains("holds 16 bytes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_data_directory_created_for_a_key_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let top = std::env::temp_dir().join(format!("gemba-secret-dir-{}", std::process::id()));
        let data = top.join("data");
        create_private(&data.join("grid.key"), "0123456789abcdef0123456789abcdef").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&top), 0o700);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("grid.key")), 0o600);
        // A second file in it is created alone; the first stays.
        touch_private(&data.join("gemba.db")).unwrap();
        touch_private(&data.join("gemba.db")).unwrap();
        assert_eq!(mode(&data.join("gemba.db")), 0o600);
        std::fs::remove_dir_all(&top).unwrap();
    }
}
