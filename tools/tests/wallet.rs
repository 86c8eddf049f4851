//! The SPV wallet end to end (issue 21): `tools/tests/wallet.py` syncs a wallet's certified headers from a 4-node
//! `cas local --serve` cluster, resumes the sync from another node, checks a payment's receipt against the stored
//! headers (a changed transaction, verdict, place or path is refused, as is a changed header file) and the SPV
//! balance of the payee. The script says what failed.

mod common;

#[test]
fn a_wallet_keeps_certified_headers_and_checks_payments_against_them() {
    let stdout = common::run_script("wallet.py", "wallet: all checks passed");
    eprintln!("{stdout}");
}
