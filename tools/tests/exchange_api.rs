//! The exchange gateway end to end (issue 17): `tools/tests/exchange_api.py` drives a 4-node `cas local --serve`
//! cluster through the HTTP API with nothing but Python's standard library, as an integrator in another language would:
//! balance and outputs, submit and wait for final, duplicate, rejections with their codes, status on another node and
//! after the submitting node is SIGKILLed and restarted, and the deposit stream resumed after a disconnect with no gap
//! and no repeat, balances at past heights, and settlement receipts checked offline with `cas receipt verify` (one byte
//! changed fails). The script says what failed.

mod common;

#[test]
fn an_exchange_integrates_over_http_with_a_standard_library_client() {
    let stdout = common::run_script("exchange_api.py", "exchange API: all checks passed");
    eprintln!("{stdout}");
}
