//! Signed approvals: what governance signs and how the executor checks it (docs/contract.md, Governance gates).
//!
//! Governance signs the canonical bytes of [`ApprovalClaims`] with its Ed25519 key; the claims
//! bind the approval to one proposal (its id and the SHA-256 of its content) and carry an
//! expiry. The executor holds only public keys, and accepts an approval only if a key it
//! trusts (matched by key id) verifies the signature and the approval has not expired.
//! One-time use is the executor's to enforce, since only it knows what it has executed.
//!
//! Keys are 32-byte Ed25519 seeds and public keys, stored as one line of lower-case hex.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::{Encoding, encode_as};
use crate::payload::{ActionProposal, ApprovalClaims, SignedApproval};
use crate::proof::ProofHash;
use crate::{Timestamp, hex};

/// Governance's secret signing key (one copy per partition a governance instance runs).
#[derive(Clone)]
pub struct ApprovalSigner {
    key: SigningKey,
}

impl fmt::Debug for ApprovalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalSigner").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

/// A problem with key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be 64 lower-case hex characters (32 bytes)")]
    BadFormat,
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

impl ApprovalSigner {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// Reads a key written by [`ApprovalSigner::to_hex`].
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let seed = hex::decode_array::<32>(text.trim()).ok_or(KeyError::BadFormat)?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// The secret seed as hex (for the key file; keep it private).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.key.to_bytes())
    }

    pub fn public_key(&self) -> ApprovalVerifier {
        ApprovalVerifier { key: self.key.verifying_key() }
    }

    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    /// Signs the claims.
    pub fn sign(&self, claims: ApprovalClaims) -> SignedApproval {
        let signature = self.key.sign(&claims.signing_bytes());
        SignedApproval {
            claims,
            key_id: self.key_id(),
            signature: hex::encode(&signature.to_bytes()),
        }
    }
}

/// A public key the executor trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalVerifier {
    key: VerifyingKey,
}

/// Why an approval is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("signed by key {0}, which this executor does not trust")]
    UnknownKey(String),
    #[error("the signature does not match the approval's content")]
    BadSignature,
    #[error("expired at {expires_at} (now {now})")]
    Expired { expires_at: Timestamp, now: Timestamp },
}

impl ApprovalVerifier {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode_array::<32>(text.trim()).ok_or(KeyError::BadFormat)?;
        VerifyingKey::from_bytes(&bytes).map(|key| Self { key }).map_err(|_| KeyError::BadPublicKey)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The first 8 bytes of the public key, in hex: names the key in approvals and logs.
    pub fn key_id(&self) -> String {
        hex::encode(&self.key.as_bytes()[..8])
    }
}

/// Checks an approval against trusted keys and the current time.
pub fn verify(
    approval: &SignedApproval,
    trusted: &[ApprovalVerifier],
    now: Timestamp,
) -> Result<(), ApprovalError> {
    verify_signature(approval, trusted)?;
    check_expiry(approval, now)
}

/// Checks only that the approval has not expired at `now`.
pub fn check_expiry(approval: &SignedApproval, now: Timestamp) -> Result<(), ApprovalError> {
    if now >= approval.claims.expires_at {
        return Err(ApprovalError::Expired { expires_at: approval.claims.expires_at, now });
    }
    Ok(())
}

/// Checks only that a trusted key signed the approval's claims, whatever the time.
pub fn verify_signature(
    approval: &SignedApproval,
    trusted: &[ApprovalVerifier],
) -> Result<(), ApprovalError> {
    let key = trusted
        .iter()
        .find(|k| k.key_id() == approval.key_id)
        .ok_or_else(|| ApprovalError::UnknownKey(approval.key_id.chars().take(32).collect()))?;
    let bytes = hex::decode_array::<64>(&approval.signature).ok_or(ApprovalError::BadSignature)?;
    let signature = Signature::from_bytes(&bytes);
    key.key
        .verify_strict(&approval.claims.signing_bytes(), &signature)
        .map_err(|_| ApprovalError::BadSignature)
}

/// The hash an approval carries to bind it to its proposal's content.
pub fn proposal_hash(proposal: &ActionProposal) -> String {
    let bytes = encode_as(proposal, Encoding::MsgPack).unwrap_or_default();
    ProofHash::of(&bytes).to_hex()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Action, ActionParams, Uuid};

    fn claims(now: Timestamp) -> ApprovalClaims {
        ApprovalClaims {
            approval_id: Uuid::from_u128(1),
            proposal_id: Uuid::from_u128(2),
            proposal_hash: "ab".repeat(32),
            incident_id: None,
            env: "stage".parse().unwrap(),
            service: "payments-api".parse().unwrap(),
            action: Action::Restart,
            params: ActionParams::default(),
            approved_by: "policy".into(),
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(300)),
        }
    }

    #[test]
    fn a_signed_approval_verifies_with_the_public_key_only() {
        let signer = ApprovalSigner::generate().unwrap();
        let public = ApprovalVerifier::from_hex(&signer.public_key().to_hex()).unwrap();
        let now = Timestamp::now();
        let approval = signer.sign(claims(now));
        assert_eq!(verify(&approval, &[public], now), Ok(()));
    }

    #[test]
    fn tampering_with_any_claim_breaks_the_signature() {
        let signer = ApprovalSigner::generate().unwrap();
        let now = Timestamp::now();
        let good = signer.sign(claims(now));
        let trusted = [signer.public_key()];
        let mut other_action = good.clone();
        other_action.claims.action = Action::Rollback;
        let mut other_service = good.clone();
        other_service.claims.service = "other".parse().unwrap();
        let mut later = good.clone();
        later.claims.expires_at = now.plus(Duration::from_secs(3600));
        for forged in [other_action, other_service, later] {
            assert_eq!(verify(&forged, &trusted, now), Err(ApprovalError::BadSignature));
        }
        let mut garbage = good;
        garbage.signature = "zz".into();
        assert_eq!(verify(&garbage, &trusted, now), Err(ApprovalError::BadSignature));
    }

    #[test]
    fn another_key_is_not_trusted_and_expiry_is_enforced() {
        let (ours, theirs) =
            (ApprovalSigner::generate().unwrap(), ApprovalSigner::generate().unwrap());
        let now = Timestamp::now();
        let forged = theirs.sign(claims(now));
        assert!(matches!(
            verify(&forged, &[ours.public_key()], now),
            Err(ApprovalError::UnknownKey(_))
        ));
        // Same key id, different key: the signature is what counts.
        let mut impostor = forged.clone();
        impostor.key_id = ours.key_id();
        assert_eq!(verify(&impostor, &[ours.public_key()], now), Err(ApprovalError::BadSignature));
        let approval = ours.sign(claims(now));
        let at_expiry = approval.claims.expires_at;
        assert!(matches!(
            verify(&approval, &[ours.public_key()], at_expiry),
            Err(ApprovalError::Expired { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let signer = ApprovalSigner::generate().unwrap();
        let again = ApprovalSigner::from_hex(&signer.to_hex()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        assert_eq!(ApprovalSigner::from_hex("nope").unwrap_err(), KeyError::BadFormat);
        assert!(!format!("{signer:?}").contains(&signer.to_hex()));
    }
}
