//! Committee hand-over on a real cluster (issue 19): `tools/tests/handover.py` runs 4 members and 3 followers with
//! hand-overs (protocol version 3); a follower declares its candidacy, is elected, and joins the committee at the
//! epoch's start while the member it replaces leaves to follow, both in their running processes, under a light load;
//! every payment is final, every issuance of the new epochs pays by the formula, and all 7 nodes end at one
//! commitment. The script says what failed.

mod common;

#[test]
fn an_elected_follower_joins_and_a_member_leaves_under_load() {
    let stdout = common::run_script("handover.py", "handover: all checks passed");
    eprintln!("{stdout}");
}
