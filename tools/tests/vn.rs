//! Business networks on a real 4-node cluster (issue 21): `tools/tests/vn.py` registers two VNs with their Policies
//! (`cas vn register`), runs three `cas rs` per VN, refuses VN transactions short of their endorsements
//! (`not_endorsed`), pays through each RS's AI endpoint (endorsed by its peers, final), checks each RS's local
//! ledger against the node's balances, and checks on the wire that no RS was served the other VN's transactions and
//! that the public routes show none. The script says what failed.

mod common;

#[test]
fn two_vns_endorse_route_and_isolate_their_transactions() {
    let stdout = common::run_script("vn.py", "vn: all checks passed");
    eprintln!("{stdout}");
}
