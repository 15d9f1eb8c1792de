//! Governance's signing key, read once at start; a missing or malformed key is a configuration
//! error (exit 64).

use std::path::{Path, PathBuf};

use bus_schema::approval::{ApprovalSigner, KeyError};

/// Why `--signing-key` gave no signing key.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read --signing-key {}: {source} (create one with `cnctl keygen`)", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--signing-key {}: {source}", path.display())]
    Invalid { path: PathBuf, source: KeyError },
}

/// Reads the signing key file written by `cnctl keygen`.
pub fn read_signer(path: &Path) -> Result<ApprovalSigner, SigningKeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SigningKeyError::Read { path: path.to_owned(), source })?;
    ApprovalSigner::from_hex(&text)
        .map_err(|source| SigningKeyError::Invalid { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_key_is_named_and_keeps_its_source() {
        let missing = read_signer(Path::new("/nonexistent/governance.key")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read --signing-key /nonexistent/governance.key: No such file or directory (os error 2) (create one with `cnctl keygen`)"
        );
        assert!(std::error::Error::source(&missing).is_some());
        let path = std::env::temp_dir().join(format!("cn-signing-key-{}", std::process::id()));
        std::fs::write(&path, "not hex").unwrap();
        let bad = read_signer(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(bad, SigningKeyError::Invalid { source: KeyError::BadFormat, .. }));
        assert!(
            bad.to_string().ends_with(": a key must be 64 lower-case hex characters (32 bytes)")
        );
    }
}
