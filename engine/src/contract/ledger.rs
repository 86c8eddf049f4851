//! Contracts on the ledger: a deploy transaction records a contract (its code's hash, by its deployer) at a place
//! of its own; a call transaction carries the code (checked against that hash), the function and its arguments,
//! and spends coins of the contract's account, which nobody can sign for: only a call of its own code moves them.
//! The contract's state is those coins. A call sees the CAS its inputs bring (`balance("contract")` is the
//! contract's, `balance(KEY)` what KEY's inputs bring); its transfers become coins the ledger writes after the
//! transaction's own outputs, and what it keeps comes back to the contract's account as one coin. A call over the
//! budget is refused before it runs, a failing one changes nothing (the whole transaction is refused). Execution
//! costs no fee beyond the transaction's own (the whitepaper), only the budget bounds it.

use rkyv::{Archive, Deserialize, Serialize};

use super::{CallError, Effects, Host, Script, Value, DEFAULT_BUDGET};
use crate::crypto::PublicKey;
use crate::id::{AssetId, Hash32, TxId};
use crate::tx::{OutPoint, TxOutput};

/// The set index of a contract's record.
pub const CONTRACT_INDEX: u32 = u32::MAX - 11;
const _: () = assert!(CONTRACT_INDEX >= crate::rules::RECORD_INDEX_MIN);
/// Bytes of one text argument.
pub const ARG_TEXT_BYTES_MAX: usize = 64;
/// Bytes of a function name.
pub const FUNCTION_BYTES_MAX: usize = 64;
/// What `balance` and `transfer` call the contract's own account in a script.
pub const CONTRACT_ACCOUNT: &str = "contract";

/// One argument of a call.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum ContractArg {
    Int(i64),
    Text(String),
}

/// What a call transaction asks: `function(args)` of the contract `contract`, whose code it carries.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct ContractCall {
    pub contract: Hash32,
    pub function: String,
    pub args: Vec<ContractArg>,
    pub code: Vec<u8>,
}

/// The id of the contract a deploy transaction creates.
pub fn contract_id(deploy: &TxId) -> Hash32 {
    Hash32::of(crate::id::domain::CONTRACT, &deploy.0)
}

/// The account a contract holds its coins in: its id as a key. Nobody holds a secret key for it (finding one for a
/// hash is finding an ed25519 key for a given point), so only a call of the contract spends its coins.
pub fn contract_account(contract: &Hash32) -> PublicKey {
    PublicKey(contract.0)
}

/// Where the set holds a contract's record.
pub fn contract_outpoint(contract: &Hash32) -> OutPoint {
    OutPoint {
        tx: *contract,
        index: CONTRACT_INDEX,
    }
}

/// A contract's record: the hash of its code, by its deployer (amount 0: no balance).
pub fn contract_record(deployer: &PublicKey, code: &[u8]) -> TxOutput {
    TxOutput {
        amount: 0,
        asset: AssetId(code_hash(code)),
        owner: *deployer,
        unlock_height: None,
    }
}

/// The hash a contract's record keeps of its code.
pub fn code_hash(code: &[u8]) -> Hash32 {
    Hash32::of(crate::id::domain::CONTRACT_CODE, code)
}

/// Parses a contract's code (UTF-8 source within the language's bounds).
pub fn parse_code(code: &[u8]) -> Result<Script, String> {
    let source = std::str::from_utf8(code).map_err(|_| "the code is not UTF-8".to_string())?;
    Script::parse(source).map_err(|e| e.to_string())
}

/// Scripts parsed on this thread, by code hash: a contract called again is not parsed again (parsing is pure, so
/// a cached script is the one the code gives). Bounded: emptied when full.
const PARSED_KEPT: usize = 256;

thread_local! {
    static PARSED: std::cell::RefCell<std::collections::HashMap<Hash32, std::rc::Rc<Script>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// [`parse_code`] of code whose [`code_hash`] is `hash`, from this thread's cache when it was parsed before.
pub fn parse_cached(hash: Hash32, code: &[u8]) -> Result<std::rc::Rc<Script>, String> {
    if let Some(script) = PARSED.with(|parsed| parsed.borrow().get(&hash).cloned()) {
        return Ok(script);
    }
    let script = std::rc::Rc::new(parse_code(code)?);
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if parsed.len() == PARSED_KEPT {
            parsed.clear();
        }
        parsed.insert(hash, script.clone());
    });
    Ok(script)
}

/// Why a call did not run to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallRefusal {
    /// Over the budget, refused before it ran.
    Budget,
    /// It ran and failed (a `require`, an overflow, a bad receiver...): its effects are dropped.
    Failed(String),
}

/// Runs `call` of `script` at `height` over the CAS its inputs bring (`brought`: per key, the contract's under
/// [`CONTRACT_ACCOUNT`]); its effects, each transfer's receiver a key.
pub fn run(
    script: &Script,
    call: &ArchivedContractCall,
    height: u64,
    brought: &[(String, i128)],
) -> Result<Vec<(PublicKey, u64)>, CallRefusal> {
    struct LedgerHost<'a> {
        brought: &'a [(String, i128)],
        height: u64,
    }
    impl Host for LedgerHost<'_> {
        fn contract_account(&self) -> &str {
            CONTRACT_ACCOUNT
        }
        fn balance(&self, account: &str) -> i128 {
            self.brought
                .iter()
                .filter(|(key, _)| key == account)
                .map(|(_, amount)| amount)
                .sum()
        }
        fn height(&self) -> u64 {
            self.height
        }
    }
    let args = call
        .args
        .iter()
        .map(|arg| match arg {
            ArchivedContractArg::Int(value) => Value::Int(i128::from(value.to_native())),
            ArchivedContractArg::Text(text) => Value::Str(text.to_string()),
        })
        .collect();
    let host = LedgerHost { brought, height };
    let effects: Effects = script
        .call(call.function.as_str(), args, DEFAULT_BUDGET, &host)
        .map_err(|error| match error {
            CallError::Refused(super::ScriptError::OverBudget { .. }) | CallError::Budget(_) => {
                CallRefusal::Budget
            }
            other => CallRefusal::Failed(other.to_string()),
        })?;
    effects
        .transfers
        .iter()
        .map(|(to, amount)| {
            let key = PublicKey::from_hex(to)
                .map_err(|_| CallRefusal::Failed(format!("transfer to {to:?}: not a key")))?;
            let amount = u64::try_from(*amount)
                .map_err(|_| CallRefusal::Failed(format!("transfer of {amount}: past a u64")))?;
            Ok((key, amount))
        })
        .collect()
}
