//! 32-byte identifiers: transaction ids, block hashes, package ids and asset ids, all blake3.
//!
//! Every kind of id hashes under its own blake3 `derive_key` context, so the id of one kind can never equal the id
//! of another kind computed over the same bytes (a tx id is never a block hash). Nothing here reads a clock or IO.

use core::fmt;

use rkyv::{Archive, Deserialize, Serialize};

/// The blake3 contexts, one per kind of id. Changing one changes every id of that kind: it is a format change.
pub mod domain {
    pub const TX_ID: &str = "CAS 2026-11 transaction id v1";
    pub const BLOCK_HASH: &str = "CAS 2026-11 block header hash v1";
    pub const PACKAGE_ID: &str = "CAS 2026-11 package id v1";
    pub const MERKLE_LEAF: &str = "CAS 2026-11 merkle leaf v1";
    pub const MERKLE_NODE: &str = "CAS 2026-11 merkle node v1";
    pub const UTXO_ELEMENT: &str = "CAS 2026-11 utxo set element v1";
    pub const UTXO_CHECKSUM: &str = "CAS 2026-11 utxo set checksum v1";
    pub const BATCH_WEIGHTS: &str = "CAS 2026-11 ed25519 batch weights v1";
    pub const CLIENT_ID_CLAIM: &str = "CAS 2026-12 client id claim v1";
    pub const STAKE_ASSET: &str = "CAS 2026-12 stake asset v1";
    pub const CANDIDACY: &str = "CAS 2026-12 candidacy record v1";
    pub const FEE_POT: &str = "CAS 2026-12 fee pot v1";
    pub const ELECTION: &str = "CAS 2026-12 election record v1";
    pub const CONDUCT: &str = "CAS 2026-12 conduct record v1";
    pub const EVIDENCE: &str = "CAS 2026-12 equivocation evidence record v1";
    pub const SIGNATURES_ROOT: &str = "CAS 2026-12 block signatures root v1";
    pub const TOKEN_ASSET: &str = "CAS 2026-12 token asset v1";
    pub const MINT_RIGHT: &str = "CAS 2026-12 token mint right v1";
    pub const TOKEN_DEFINITION: &str = "CAS 2026-12 token definition record v1";
    pub const LEDGER_OBJECT: &str = "CAS 2026-12 ledger object place v1";
    pub const CONTRACT: &str = "CAS 2026-12 contract id v1";
    pub const CONTRACT_CODE: &str = "CAS 2026-12 contract code v1";
    pub const GOVERNANCE_BALLOT: &str = "CAS 2026-12 governance ballot v1";
    pub const GOVERNANCE_VOTE: &str = "CAS 2026-12 governance vote v1";
    pub const VN_POLICY: &str = "CAS 2026-12 vn policy record v1";
    pub const VN_ENDORSER: &str = "CAS 2026-12 vn endorser record v1";
    pub const VN_STREAM_REQUEST: &str = "CAS 2026-12 vn stream request v1";
    /// What a BFT vote signs ([`crate::evidence::vote_digest`]): the consensus crate's votes and the ledger's
    /// evidence checks share it.
    pub const VOTE: &str = "CAS 2026-12 consensus vote v2";
}

/// A blake3 derive-key context whose context key is computed once: a hasher made from it skips hashing the context
/// string (one blake3 compression) and copies no hasher state, which matters on paths that hash per transaction or
/// per UTXO element. The output is exactly `blake3::Hasher::new_derive_key(context)`'s.
pub struct DomainKey {
    context: &'static str,
    key: std::sync::OnceLock<blake3::hazmat::ContextKey>,
}

impl DomainKey {
    pub const fn new(context: &'static str) -> DomainKey {
        DomainKey {
            context,
            key: std::sync::OnceLock::new(),
        }
    }

    fn context_key(&self) -> &blake3::hazmat::ContextKey {
        self.key
            .get_or_init(|| blake3::hazmat::hash_derive_key_context(self.context))
    }

    pub fn hasher(&self) -> blake3::Hasher {
        use blake3::hazmat::HasherExt;
        blake3::Hasher::new_from_context_key(self.context_key())
    }

    pub fn hash(&self, bytes: &[u8]) -> Hash32 {
        Hash32(*self.hasher().update(bytes).finalize().as_bytes())
    }

    /// Hashes many short messages at once ([`crate::hash_many`]): `out[i]` is `self.hash(messages[i])`.
    pub fn hash_many(&self, messages: &[&[u8]], out: &mut [Hash32]) {
        crate::hash_many::derive_key_many(self.context_key(), messages, out);
    }
}

/// A 32-byte blake3 output.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[rkyv(derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord))]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// Hashes `bytes` under a domain context (see [`DomainKey`] for hot paths).
    pub fn of(domain: &str, bytes: &[u8]) -> Hash32 {
        let mut hasher = blake3::Hasher::new_derive_key(domain);
        hasher.update(bytes);
        Hash32(*hasher.finalize().as_bytes())
    }

    pub fn from_hex(text: &str) -> Result<Hash32, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(Hash32(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<&ArchivedHash32> for Hash32 {
    fn from(archived: &ArchivedHash32) -> Hash32 {
        Hash32(archived.0)
    }
}

impl From<blake3::Hash> for Hash32 {
    fn from(hash: blake3::Hash) -> Hash32 {
        Hash32(*hash.as_bytes())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ArchivedHash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Hash32(self.0), f)
    }
}

/// A transaction id: the hash of the transaction's canonical body (signatures excluded, so they cannot change it).
pub type TxId = Hash32;
/// A block hash: the hash of the block header's canonical fields.
pub type BlockHash = Hash32;
/// A package id: the hash of a Synchronizer package (a batch of transactions).
pub type PackageId = Hash32;

/// The asset an output holds. The native coin is [`AssetId::CAS`]; a business token's id is derived from the
/// transaction that issues it, so no coordination is needed to allocate one.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Debug,
)]
#[rkyv(derive(Clone, Copy, PartialEq, Eq, Hash, Debug))]
pub struct AssetId(pub Hash32);

impl AssetId {
    pub const CAS: AssetId = AssetId(Hash32::ZERO);
    /// Not an asset: the marker of a client id claim in the UTXO set ([`crate::rules::claim_outpoint`]). No genesis
    /// may allocate it, and no transaction can spend or create one.
    pub const CLIENT_ID_CLAIM: AssetId = AssetId(Hash32([0xff; 32]));

    /// The asset of CAS bonded as stake for the POS candidate `candidate` ([`crate::stake`]): one asset per
    /// candidate, so a stake output names whom it backs, and per-asset conservation keeps stake from being
    /// created or freed except by the stake transactions that convert it to and from CAS.
    pub fn stake_of(candidate: &crate::crypto::PublicKey) -> AssetId {
        AssetId(Hash32::of(domain::STAKE_ASSET, &candidate.0))
    }
}

impl From<&ArchivedAssetId> for AssetId {
    fn from(archived: &ArchivedAssetId) -> AssetId {
        AssetId(Hash32::from(&archived.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_ids_of_the_same_bytes() {
        let bytes = b"the same bytes";
        let tx = Hash32::of(domain::TX_ID, bytes);
        let block = Hash32::of(domain::BLOCK_HASH, bytes);
        let package = Hash32::of(domain::PACKAGE_ID, bytes);
        assert_ne!(tx, block);
        assert_ne!(tx, package);
        assert_ne!(block, package);
        assert_eq!(tx, Hash32::of(domain::TX_ID, bytes));
    }

    #[test]
    fn hex_round_trips() {
        let hash = Hash32::of(domain::TX_ID, b"x");
        assert_eq!(Hash32::from_hex(&hash.to_hex()).unwrap(), hash);
        assert!(Hash32::from_hex("zz").is_err());
    }

    #[test]
    fn a_domain_key_hashes_as_derive_key_does() {
        static KEY: DomainKey = DomainKey::new(domain::MERKLE_NODE);
        for bytes in [&b""[..], b"abc", &[7u8; 3000]] {
            assert_eq!(KEY.hash(bytes), Hash32::of(domain::MERKLE_NODE, bytes));
        }
    }
}
