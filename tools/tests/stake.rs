//! Stake and POS candidacy on a real 4-node cluster (issue 19, the ledger part): `tools/tests/stake.py` declares a
//! candidacy with `cas tx --candidacy`, delegates with `--bond`, unbonds with `--unbond`, checks the refusals and
//! their codes, reads the registry and the election with `GET /v1/stake` and `cas stake`, and checks the validator
//! rewards block by block (each issuance pays out the previous block's fees; a POS node gets exactly its share). The
//! script says what failed.

mod common;

#[test]
fn candidacy_delegation_and_unbonding_on_a_cluster() {
    let stdout = common::run_script("stake.py", "stake: all checks passed");
    eprintln!("{stdout}");
}
