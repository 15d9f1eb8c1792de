//! `cnctl keygen`: governance's Ed25519 key pair.
//!
//! The secret key (`governance.key`, mode 0600) goes to the governance gate only; the public key
//! (`governance.pub`) to every executor. To rotate: generate a new pair in another directory,
//! give executors both public keys (`--verify-key old.pub,new.pub`), switch governance to the
//! new secret key, then drop the old public key once the last old approval has expired.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bus_schema::approval::ApprovalSigner;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Directory to write governance.key and governance.pub into (created if missing).
    #[arg(long, default_value = "data/keys")]
    pub out: PathBuf,
    /// Replace an existing key pair (approvals signed with the old key stop verifying).
    #[arg(long)]
    pub force: bool,
}

pub fn keygen(args: &KeygenArgs) -> Result<ExitCode, Failure> {
    let (secret, public) = key_paths(&args.out);
    if secret.exists() && !args.force {
        return Err(
            format!("{} already exists; use --force to replace it", secret.display()).into()
        );
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let signer = ApprovalSigner::generate()?;
    write_private(&secret, &format!("{}\n", signer.to_hex()))?;
    std::fs::write(&public, format!("{}\n", signer.public_key().to_hex()))
        .map_err(|e| format!("cannot write {}: {e}", public.display()))?;
    outln!("key id {}", signer.key_id());
    outln!("secret key: {} (governance-gate --signing-key)", secret.display());
    outln!("public key: {} (executor --verify-key)", public.display());
    Ok(ExitCode::SUCCESS)
}

pub fn key_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("governance.key"), dir.join("governance.pub"))
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // An existing file keeps its old mode on open; make sure it is private now.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    Ok(())
}
