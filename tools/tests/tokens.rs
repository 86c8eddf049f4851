//! Tokens and the DEX on a real 4-node cluster (issue 20): `tools/tests/tokens.py` issues a token with an offer and
//! mint rights (`cas token issue`), buys from the offer, places a bid (`cas order place`), races two fills of its one
//! place through two nodes (exactly one is accepted, the other refused the same on every node), mints, approves and
//! transfers from the allowance (with the refusals' codes), deploys and calls a contract (`cas contract`), and checks that every node answers the same balances,
//! objects and supply, and that supply plus unspent mint rights is the maximum. The script says what failed.

mod common;

#[test]
fn tokens_and_dex_fills_agree_on_every_node() {
    let stdout = common::run_script("tokens.py", "tokens: all checks passed");
    eprintln!("{stdout}");
}
