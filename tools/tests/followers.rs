//! Followers on a real cluster (issue 19): `tools/tests/followers.py` runs 4 members and 5 followers over the
//! broadcast tree (the fifth reads from a follower), submits through the deepest follower, checks finality, a
//! receipt served by a follower, relayed refusals with their codes, equal balances, the operator endpoints, a
//! SIGKILLed follower catching up after its restart, a follower whose parent is SIGKILLed going on from the next
//! upstream, and one commitment on all 9 nodes at the end. The script says what
//! failed.

mod common;

#[test]
fn followers_keep_the_committees_ledger_and_serve_it() {
    let stdout = common::run_script("followers.py", "followers: all checks passed");
    eprintln!("{stdout}");
}
