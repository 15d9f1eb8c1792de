//! The governance public keys the executor trusts, read once at start; a missing or malformed
//! key is a configuration error (exit 64).

use std::path::{Path, PathBuf};

use bus_schema::approval::{ApprovalVerifier, KeyError};

/// Why a `--verify-key` file gave no public key.
#[derive(Debug, thiserror::Error)]
pub enum VerifyKeyError {
    #[error("cannot read --verify-key {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--verify-key {}: {source}", path.display())]
    Invalid { path: PathBuf, source: KeyError },
}

/// Reads one public key file written by `cnctl keygen`.
pub fn read_verifier(path: &Path) -> Result<ApprovalVerifier, VerifyKeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| VerifyKeyError::Read { path: path.to_owned(), source })?;
    ApprovalVerifier::from_hex(&text)
        .map_err(|source| VerifyKeyError::Invalid { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_key_is_named_and_keeps_its_source() {
        let missing = read_verifier(Path::new("/nonexistent/governance.pub")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read --verify-key /nonexistent/governance.pub: No such file or directory (os error 2)"
        );
        assert!(std::error::Error::source(&missing).is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("governance.pub");
        std::fs::write(&path, "not hex").unwrap();
        let bad = read_verifier(&path).unwrap_err();
        assert!(matches!(bad, VerifyKeyError::Invalid { source: KeyError::BadFormat, .. }));
        assert_eq!(
            bad.to_string(),
            format!(
                "--verify-key {}: a key must be 64 lower-case hex characters (32 bytes)",
                path.display()
            )
        );
    }
}
