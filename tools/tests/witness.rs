//! The witness chain end to end, as processes: `cas local` runs a node with a mining thread, which witnesses the
//! stored DPOS blocks; `cas witness verify` passes on the untouched data; then stored blocks are rewritten the way
//! an attacker with the disk would (valid record checksum, same length) and verify names the first one changed:
//! a changed transaction (the body no longer matches the header) and a changed header (the hash differs from the
//! one the witness chain committed to).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use cas_engine::codec::{decode_block, encode_block, to_owned_block};
use cas_shards::store::segment_path;
use cas_shards::{BlockStore, StoreConfig};

fn cas(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cas"))
        .args(args)
        .arg(dir)
        .output()
        .expect("cas runs")
}

/// The block store's record checksum (see shards/src/store.rs): what an attacker recomputes after an edit.
fn record_checksum(payload_len: u32, height: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("CAS 2026-11 block store record v1");
    h.update(&payload_len.to_le_bytes());
    h.update(&height.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Rewrites stored block `height` through `edit`, keeping the record valid. Returns false if `edit` declined.
fn tamper(data_dir: &Path, height: u64, edit: impl Fn(&mut cas_engine::Block) -> bool) -> bool {
    let blocks = data_dir.join("ledger").join("blocks");
    let (store, _) = BlockStore::open(&blocks, &StoreConfig::default()).unwrap();
    let location = store.location(height).unwrap();
    let mut block = to_owned_block(decode_block(&store.read(height).unwrap()).unwrap());
    drop(store);
    if !edit(&mut block) {
        return false;
    }
    let payload = encode_block(&block).to_vec();
    assert_eq!(payload.len() as u32, location.payload_len, "same length");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(&blocks, location.segment))
        .unwrap();
    let checksum = record_checksum(location.payload_len, height, &payload);
    file.write_all_at(&checksum, location.offset + 16).unwrap();
    file.write_all_at(&payload, location.offset + 48).unwrap();
    file.sync_all().unwrap();
    true
}

#[test]
fn verify_names_the_first_tampered_block() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cas"))
        .args([
            "local",
            "--nodes",
            "1",
            "--mining-threads",
            "1",
            "--duration-s",
            "10",
            "--rate",
            "100",
            "--accounts",
            "100",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("cas runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let data_dir = dir.path().join("node0");

    let clean = cas(&["witness", "verify", "--data-dir"], &data_dir);
    let stdout = String::from_utf8_lossy(&clean.stdout).to_string();
    assert!(
        clean.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    // "DPOS blocks 1..=K of N stored match it", with K a multiple of the span (128) and at least one span.
    let covered: u64 = stdout
        .split("DPOS blocks 1..=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no coverage in {stdout}"));
    assert!(covered >= 128, "{stdout}");

    // A transaction's output raised, in the highest witnessed block that has transactions.
    let body_height = (1..=covered)
        .rev()
        .find(|&height| {
            tamper(&data_dir, height, |block| match block.txs.first_mut() {
                Some(tx) if !tx.body.outputs.is_empty() => {
                    tx.body.outputs[0].amount += 1;
                    true
                }
                _ => false,
            })
        })
        .expect("some witnessed block carries transactions");
    let tampered = cas(&["witness", "verify", "--data-dir"], &data_dir);
    let stderr = String::from_utf8_lossy(&tampered.stderr).to_string();
    assert!(!tampered.status.success());
    assert!(
        stderr.contains(&format!("DPOS block {body_height} does not match"))
            && stderr.contains("tx root"),
        "{stderr}"
    );

    // An earlier header's timestamp changed: that block is now the first mismatch.
    assert!(tamper(&data_dir, 2, |block| {
        block.header.timestamp_ms += 1;
        true
    }));
    let tampered = cas(&["witness", "verify", "--data-dir"], &data_dir);
    let stderr = String::from_utf8_lossy(&tampered.stderr).to_string();
    assert!(!tampered.status.success());
    assert!(
        stderr.contains("DPOS block 2 does not match") && stderr.contains("committed to"),
        "{stderr}"
    );
}

/// The public key in a `cas keygen` key file.
fn public_key(path: &Path) -> cas_engine::PublicKey {
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text
        .lines()
        .find_map(|line| line.strip_prefix("public = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no public key in {}", path.display()));
    cas_engine::PublicKey::from_hex(hex).unwrap()
}

/// Every stored ledger block of a stopped node, from height 1, as the bytes stored.
fn stored_blocks(data_dir: &Path) -> Vec<Vec<u8>> {
    let (store, _) = BlockStore::open(
        &data_dir.join("ledger").join("blocks"),
        &StoreConfig::default(),
    )
    .unwrap();
    let durable = store.durable_height().unwrap_or(0);
    (1..=durable).map(|h| store.read(h).unwrap()).collect()
}

/// Runs a 4-node cluster with a miner per node (plus `extra` arguments) and checks that every node stored the same
/// ledger blocks, issuance included, that the rewards went to the miners, and that node 0's count matches.
fn mining_cluster_pays_identically(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = 4;
    let output = Command::new(env!("CARGO_BIN_EXE_cas"))
        .arg("local")
        .args(extra)
        .args([
            "--nodes",
            "4",
            "--mining-threads",
            "1",
            "--witness-span",
            "8",
            "--duration-s",
            "8",
            "--rate",
            "40",
            "--accounts",
            "40",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("cas runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let miners: Vec<cas_engine::PublicKey> = (0..nodes)
        .map(|i| public_key(&dir.path().join(format!("node{i}.key"))))
        .collect();
    let blocks: Vec<Vec<Vec<u8>>> = (0..nodes)
        .map(|i| stored_blocks(&dir.path().join(format!("node{i}"))))
        .collect();
    let common = blocks.iter().map(Vec::len).min().unwrap();
    assert!(common > 0);
    // Every node stored the same ledger blocks, issuance included, byte for byte.
    for node in &blocks[1..] {
        assert!(node[..common] == blocks[0][..common], "ledgers differ");
    }
    // The miners are the validators here, so the validator payouts go to them too.
    for (index, bytes) in blocks[0][..common].iter().enumerate() {
        let block = to_owned_block(decode_block(bytes).unwrap());
        let issuance = block
            .txs
            .last()
            .expect("every block ends with its issuance");
        match &issuance.body.kind {
            cas_engine::TxKind::Issuance { height, .. } => assert_eq!(*height, index as u64 + 1),
            other => panic!("block {} ends with {other:?}", index + 1),
        }
        for output in &issuance.body.outputs {
            assert!(miners.contains(&output.owner), "a reward to a non-miner");
        }
    }
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("node0").join("status.json")).unwrap(),
    )
    .unwrap();
    let node0_height = status["height"].as_u64().unwrap() as usize;
    assert!(
        status["witnesses_ordered"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(
        status["reward_outputs"].as_u64().unwrap() > 0,
        "no witness reward matured in the run: {status}"
    );

    // Node 0's stored blocks replayed through the engine's reference ledger: same commitment as the node reported,
    // and supply conserved except by issuance (in): fees stay in the set, in each block's fee pot, until the next
    // issuance pays them out. What node 0 says it minted (it ran from the start, so its count covers every block it
    // executed) is what the issuances paid beyond the pots they spent.
    let genesis_bytes = std::fs::read(dir.path().join("genesis.bin")).unwrap();
    let genesis = to_owned_block(decode_block(&genesis_bytes).unwrap());
    let mut ledger = cas_engine::MemoryLedger::from_genesis(&genesis).unwrap();
    let supply = |ledger: &cas_engine::MemoryLedger| -> u128 {
        ledger.utxos().values().map(|c| u128::from(c.amount)).sum()
    };
    let genesis_supply = supply(&ledger);
    let mut issued = 0u128;
    for bytes in &blocks[0][..node0_height] {
        let block = decode_block(bytes).unwrap();
        let issuance = block.txs.last().unwrap();
        let pot: u128 = issuance
            .body
            .inputs
            .iter()
            .map(|input| u128::from(ledger.utxos()[&cas_engine::OutPoint::from(input)].amount))
            .sum();
        let verdicts = ledger.apply_block(block);
        for (tx, verdict) in block.txs.iter().zip(&verdicts) {
            assert!(
                verdict.is_ok()
                    || !matches!(
                        tx.body.kind,
                        cas_engine::tx::ArchivedTxKind::Issuance { .. }
                    ),
                "an issuance was refused on replay"
            );
        }
        let paid: u128 = issuance
            .body
            .outputs
            .iter()
            .map(|o| u128::from(o.amount.to_native()))
            .sum();
        issued += paid - pot;
    }
    assert_eq!(u128::from(status["issued"].as_u64().unwrap()), issued);
    assert_eq!(supply(&ledger), genesis_supply + issued);
    assert_eq!(
        ledger.commitment().to_hex(),
        status["utxo_commitment"].as_str().unwrap()
    );

    // The ledger alone records the witness history: without witness.bin the audit still covers the blocks the
    // carried witnesses committed to.
    let data_dir = dir.path().join("node0");
    std::fs::remove_file(data_dir.join("witness.bin")).unwrap();
    let audit = cas(&["witness", "verify", "--data-dir"], &data_dir);
    let stdout = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(
        audit.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let covered: u64 = stdout
        .split("DPOS blocks 1..=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no coverage in {stdout}"));
    assert!(covered >= 8 * 3, "{stdout}");
}

#[test]
fn mined_witnesses_pay_their_miners_identically_on_every_node() {
    mining_cluster_pays_identically(&[]);
}

/// The killed node rebuilds its witness order from its stored blocks (each issuance checked again) and executes
/// the rest: it mints nothing twice and nothing different, so its stored ledger equals the others'.
#[test]
fn a_restarted_node_mints_nothing_twice() {
    mining_cluster_pays_identically(&["--kill-one"]);
}

/// Reads `key = "value"` from a TOML file written by `cas local` (waits until it is there).
fn toml_value(path: &Path, key: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let prefix = format!("{key} = \"");
            if let Some(value) = text
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|rest| rest.strip_suffix('"'))
            {
                return value.to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {key} in {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A child process that a failing assertion must not leave running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_standalone_miner_mines_for_the_node_it_follows_and_is_paid() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let miner_key = dir.path().join("miner.key");
    let keygen = Command::new(env!("CARGO_BIN_EXE_cas"))
        .args(["keygen", "--out"])
        .arg(&miner_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let miner = public_key(&miner_key);
    // One node with no mining threads of its own: every witness comes from `cas mine`.
    let cluster_log = dir.path().join("cluster.log");
    let cluster = Command::new(env!("CARGO_BIN_EXE_cas"))
        .args([
            "local",
            "--nodes",
            "1",
            "--mining-threads",
            "0",
            "--witness-span",
            "8",
            "--duration-s",
            "20",
            "--rate",
            "20",
            "--accounts",
            "20",
            "--dir",
        ])
        .arg(&cluster_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&cluster_log).unwrap())
        .spawn()
        .unwrap();
    let mut cluster = KillOnDrop(Some(cluster));
    let ingest = toml_value(&cluster_dir.join("node0.toml"), "ingest_listen");
    let node_key = toml_value(&cluster_dir.join("node0.key"), "public");
    let target = format!("{ingest}={node_key}");
    // The node may still be starting: a miner that cannot reach it fails at once and is started again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mined = loop {
        let run = Command::new(env!("CARGO_BIN_EXE_cas"))
            .args([
                "mine",
                "--node",
                &target,
                "--threads",
                "1",
                "--blocks",
                "4",
                "--key",
            ])
            .arg(&miner_key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout).to_string();
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        if run.status.success() {
            break stdout;
        }
        assert!(
            stderr.contains("cannot reach") && std::time::Instant::now() < deadline,
            "{stdout}{stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(mined.contains("rewards to"), "{mined}");
    assert!(
        mined.matches(": Accepted").count() >= 4,
        "the node accepted fewer than 4 finds:\n{mined}"
    );
    let finished = cluster.0.take().unwrap().wait().unwrap();
    assert!(
        finished.success(),
        "{}",
        std::fs::read_to_string(&cluster_log).unwrap_or_default()
    );

    let data_dir = cluster_dir.join("node0");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("status.json")).unwrap()).unwrap();
    assert!(
        status["witness_accepted"].as_u64().unwrap() >= 4,
        "{status}"
    );
    assert_eq!(status["witness_mined"].as_u64().unwrap(), 0, "{status}");
    // The finds were carried into blocks, matured, and paid to the standalone miner's key.
    let paid: u64 = stored_blocks(&data_dir)
        .iter()
        .map(|bytes| {
            let block = to_owned_block(decode_block(bytes).unwrap());
            let issuance = block.txs.last().unwrap().clone();
            issuance
                .body
                .outputs
                .iter()
                .filter(|o| o.owner == miner)
                .map(|o| o.amount)
                .sum::<u64>()
        })
        .sum();
    assert!(paid > 0, "{status}");
    // And the audit passes over what the node stored.
    let audit = cas(&["witness", "verify", "--data-dir"], &data_dir);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}
