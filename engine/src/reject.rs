//! The stable rejection codes: one per reason a transaction is refused, at admission or by the rules in block
//! order, the same number and name on the QUIC path, the HTTP API and the node's transaction index. Numbers are
//! never reused or renumbered; a new rule gets a new code.

use crate::rules::TxError;

macro_rules! reject_codes {
    ($($variant:ident = $code:literal, $name:literal, $meaning:literal;)*) => {
        /// Why a transaction was refused, as clients see it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum RejectCode {
            $(#[doc = $meaning] $variant = $code,)*
        }

        impl RejectCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [RejectCode] = &[$(RejectCode::$variant,)*];

            /// The code's snake_case name, as the HTTP API writes it.
            pub fn name(self) -> &'static str {
                match self {
                    $(RejectCode::$variant => $name,)*
                }
            }

            /// One line saying what the code means.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(RejectCode::$variant => $meaning,)*
                }
            }

            /// The code of a number, if it is one.
            pub fn from_u16(code: u16) -> Option<RejectCode> {
                match code {
                    $($code => Some(RejectCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reject_codes! {
    Undecodable = 1, "undecodable", "the bytes are not a well-formed transaction within the size bounds";
    WrongChain = 2, "wrong_chain", "signed for another chain id";
    Unsigned = 3, "unsigned", "the transaction carries no signature at all";
    GenesisOnly = 10, "genesis_only", "a genesis transaction outside the genesis block";
    NoInputs = 11, "no_inputs", "the transaction spends no input";
    DuplicateInput = 12, "duplicate_input", "an input repeats an earlier input of the same transaction";
    MissingInput = 13, "missing_input", "an input does not exist (never created, or spent in an earlier block)";
    DoubleSpend = 14, "double_spend", "an input was spent earlier in the same block";
    Locked = 15, "locked", "an input is locked until a later height";
    ZeroAmount = 16, "zero_amount", "an output has a zero amount";
    InputUnsigned = 17, "input_unsigned", "an input's owner has not signed";
    UnusedSignature = 18, "unused_signature", "a signature's key owns none of the inputs";
    DuplicateSigner = 19, "duplicate_signer", "a signature repeats an earlier key";
    BadSignature = 20, "bad_signature", "a signature does not verify";
    InputOverflow = 21, "input_overflow", "the inputs' sum of an asset overflows";
    OutputOverflow = 22, "output_overflow", "the outputs' sum of an asset overflows";
    ValueNotConserved = 23, "value_not_conserved", "inputs differ from outputs plus fee for an asset";
    FeeTooLow = 24, "fee_too_low", "the fee is below the chain's minimum";
    IssuanceReserved = 25, "issuance_reserved", "issuance is minted only by the executor, last in a ledger block";
    IssuanceWrongHeight = 26, "issuance_wrong_height", "an issuance names another block's height";
    IssuanceNotPlain = 27, "issuance_not_plain", "an issuance spends other than the previous block's fee pot, carries signatures or pays a fee";
    IssuanceNotCas = 28, "issuance_not_cas", "an issuance output is not CAS or is locked";
    DuplicateClientId = 29, "duplicate_client_id", "the sender used this client id in an earlier transaction";
    NotACandidate = 30, "not_a_candidate", "a bond or unbond names a node key with no declared candidacy";
    AlreadyCandidate = 31, "already_candidate", "the node key has declared its candidacy already";
    BadAddress = 32, "bad_address", "a candidacy address is not empty, an IPv4 or an IPv6 socket address";
    BondFreesStake = 33, "bond_frees_stake", "a bond returns less stake than it spends";
    UnbondAddsStake = 34, "unbond_adds_stake", "an unbond creates more stake than it spends";
    UnbondNotLocked = 35, "unbond_not_locked", "unbonded CAS, less the fee, is not locked for the unbonding delay";
    IssuancePotUnspent = 36, "issuance_pot_unspent", "an issuance leaves the previous block's fee pot unspent";
    IssuanceBurnsFees = 37, "issuance_burns_fees", "an issuance pays out less than the fee pot it spends";
    EvidenceNotPlain = 38, "evidence_not_plain", "an equivocation record carries inputs, outputs, a fee or signatures";
    BadEvidence = 39, "bad_evidence", "an equivocation proof does not prove two votes of the member for two blocks in one round";
    EvidenceKnown = 40, "evidence_known", "an equivocation of this member is recorded already";
    TokenExists = 41, "token_exists", "a token of this issuer and nonce is issued already";
    BadTokenSpec = 42, "bad_token_spec", "a token issue's name, symbol, decimals, supply, offer or mint rights are malformed";
    MintCreatesRights = 43, "mint_creates_rights", "a mint gives back more mint rights than it spends";
    NotAnAllowance = 44, "not_an_allowance", "input 0 of a transfer-from is not an allowance";
    WrongSpender = 45, "wrong_spender", "the allowance's spender has not signed the transfer-from";
    AllowanceExpired = 46, "allowance_expired", "the allowance's last height has passed";
    AllowanceExceeded = 47, "allowance_exceeded", "a transfer-from asks more than the allowance holds";
    BadAllowance = 48, "bad_allowance", "an approve or transfer-from of a zero amount";
    NotAnOrder = 49, "not_an_order", "input 0 of a fill is not an order";
    BadOrder = 50, "bad_order", "an order or fill of a zero amount or price, on CAS itself, or whose price overflows";
    OrderExceeded = 51, "order_exceeded", "a fill asks more than the order holds";
    MakerUnpaid = 52, "maker_unpaid", "output 0 of a fill does not pay the maker exactly its due";
    AllowanceOwner = 53, "allowance_owner", "the allowance is not of the owner the transfer-from names";
    BadContract = 54, "bad_contract", "a deployed or called contract's code does not parse or breaks the language's bounds";
    NotAContract = 55, "not_a_contract", "a call names no deployed contract, or code other than the contract's";
    ContractBudget = 56, "contract_budget", "the called function may take more operations than the budget: refused before it ran";
    ContractFailed = 57, "contract_failed", "the call failed (a require, an overflow, a bad transfer) and changed nothing";
    NotEnabled = 58, "not_enabled", "a token, order, contract or governance transaction before the committee runs protocol version 4";
    BadProposal = 59, "bad_proposal", "a proposal's title, window, quorum, approval ratio or change is malformed or laxer than the genesis floors";
    UnknownProposal = 60, "unknown_proposal", "a vote names no proposal the ledger holds";
    VotingClosed = 61, "voting_closed", "a vote after its proposal's window ended";
    NoBallot = 62, "no_ballot", "the voter held no CAS at the proposal's snapshot, so it has no ballot";
    AlreadyVoted = 63, "already_voted", "the voter's ballot for this proposal is spent: one vote per holder";
    VoterUnsigned = 64, "voter_unsigned", "the voter a vote names has not signed it";
    BadPolicy = 65, "bad_policy", "a VN registration's Policy is malformed (VN 0, no or too many endorsers, a zero weight, a repeated endorser, a threshold out of range)";
    VnExists = 66, "vn_exists", "the VN is registered already";
    UnknownVn = 67, "unknown_vn", "the transaction names a VN that no registration created";
    NotEndorsed = 68, "not_endorsed", "the transaction's endorsing signatures weigh less than its VN's Policy asks";
    VnFeeUnpaid = 69, "vn_fee_unpaid", "no output pays the VN's fee rule (its amount of its business token to its collector)";
    SenderMismatch = 70, "sender_mismatch", "the first signer, whom the ledger records as issuer, owner, maker, candidate, registrar or client, does not own input 0";
}

impl RejectCode {
    pub fn number(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

impl TxError {
    /// The stable code of this rule failure.
    pub fn code(&self) -> RejectCode {
        match self {
            TxError::WrongChain { .. } => RejectCode::WrongChain,
            TxError::GenesisOnly => RejectCode::GenesisOnly,
            TxError::NoInputs => RejectCode::NoInputs,
            TxError::DuplicateInput { .. } => RejectCode::DuplicateInput,
            TxError::MissingInput { .. } => RejectCode::MissingInput,
            TxError::DoubleSpend { .. } => RejectCode::DoubleSpend,
            TxError::Locked { .. } => RejectCode::Locked,
            TxError::ZeroAmount { .. } => RejectCode::ZeroAmount,
            TxError::Unsigned { .. } => RejectCode::InputUnsigned,
            TxError::UnusedSignature { .. } => RejectCode::UnusedSignature,
            TxError::DuplicateSigner { .. } => RejectCode::DuplicateSigner,
            TxError::BadSignature { .. } => RejectCode::BadSignature,
            TxError::InputOverflow { .. } => RejectCode::InputOverflow,
            TxError::OutputOverflow { .. } => RejectCode::OutputOverflow,
            TxError::ValueNotConserved { .. } => RejectCode::ValueNotConserved,
            TxError::FeeTooLow { .. } => RejectCode::FeeTooLow,
            TxError::IssuanceReserved => RejectCode::IssuanceReserved,
            TxError::IssuanceWrongHeight { .. } => RejectCode::IssuanceWrongHeight,
            TxError::IssuanceNotPlain => RejectCode::IssuanceNotPlain,
            TxError::IssuanceNotCas { .. } => RejectCode::IssuanceNotCas,
            TxError::DuplicateClientId { .. } => RejectCode::DuplicateClientId,
            TxError::NotACandidate => RejectCode::NotACandidate,
            TxError::AlreadyCandidate => RejectCode::AlreadyCandidate,
            TxError::BadAddress { .. } => RejectCode::BadAddress,
            TxError::BondFreesStake { .. } => RejectCode::BondFreesStake,
            TxError::UnbondAddsStake { .. } => RejectCode::UnbondAddsStake,
            TxError::UnbondNotLocked { .. } => RejectCode::UnbondNotLocked,
            TxError::IssuancePotUnspent { .. } => RejectCode::IssuancePotUnspent,
            TxError::IssuanceBurnsFees { .. } => RejectCode::IssuanceBurnsFees,
            TxError::EvidenceNotPlain => RejectCode::EvidenceNotPlain,
            TxError::BadEvidence(_) => RejectCode::BadEvidence,
            TxError::EvidenceKnown => RejectCode::EvidenceKnown,
            TxError::TokenExists => RejectCode::TokenExists,
            TxError::BadTokenSpec { .. } => RejectCode::BadTokenSpec,
            TxError::MintCreatesRights { .. } => RejectCode::MintCreatesRights,
            TxError::NotAnAllowance => RejectCode::NotAnAllowance,
            TxError::AllowanceOwner => RejectCode::AllowanceOwner,
            TxError::BadContract { .. } => RejectCode::BadContract,
            TxError::NotAContract => RejectCode::NotAContract,
            TxError::ContractBudget => RejectCode::ContractBudget,
            TxError::ContractFailed { .. } => RejectCode::ContractFailed,
            TxError::NotEnabled => RejectCode::NotEnabled,
            TxError::WrongSpender => RejectCode::WrongSpender,
            TxError::AllowanceExpired { .. } => RejectCode::AllowanceExpired,
            TxError::AllowanceExceeded { .. } => RejectCode::AllowanceExceeded,
            TxError::BadAllowance { .. } => RejectCode::BadAllowance,
            TxError::NotAnOrder => RejectCode::NotAnOrder,
            TxError::BadOrder { .. } => RejectCode::BadOrder,
            TxError::OrderExceeded { .. } => RejectCode::OrderExceeded,
            TxError::MakerUnpaid { .. } => RejectCode::MakerUnpaid,
            TxError::BadProposal { .. } => RejectCode::BadProposal,
            TxError::UnknownProposal => RejectCode::UnknownProposal,
            TxError::VotingClosed { .. } => RejectCode::VotingClosed,
            TxError::NoBallot => RejectCode::NoBallot,
            TxError::AlreadyVoted => RejectCode::AlreadyVoted,
            TxError::VoterUnsigned => RejectCode::VoterUnsigned,
            TxError::BadPolicy { .. } => RejectCode::BadPolicy,
            TxError::VnExists { .. } => RejectCode::VnExists,
            TxError::UnknownVn { .. } => RejectCode::UnknownVn,
            TxError::NotEndorsed { .. } => RejectCode::NotEndorsed,
            TxError::VnFeeUnpaid { .. } => RejectCode::VnFeeUnpaid,
            TxError::SenderMismatch => RejectCode::SenderMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_round_trip_and_named_in_snake_case() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for code in RejectCode::ALL {
            assert!(numbers.insert(code.number()), "{code} repeats a number");
            assert!(names.insert(code.name()), "{code} repeats a name");
            assert_eq!(RejectCode::from_u16(code.number()), Some(*code));
            assert!(code
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(RejectCode::from_u16(0), None);
        assert_eq!(
            RejectCode::from_u16(4),
            None,
            "4 (any signature failure) is retired"
        );
    }

    /// The README's table of codes is the code's: a code added, renamed or renumbered shows up there too.
    #[test]
    fn the_readme_lists_every_code() {
        let readme = include_str!("../../README.md");
        for code in RejectCode::ALL {
            let row = format!(
                "| {} | `{}` | {} |",
                code.number(),
                code.name(),
                code.meaning()
            );
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
