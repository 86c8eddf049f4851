//! `cas witness verify --data-dir DIR`: audits a stopped node's stored DPOS (ledger) blocks against its stored
//! witness chain. The witness chain is rebuilt on its own evidence (work, difficulty, linkage, uncles), its best
//! chain's committed hashes are compared with each stored block's header hash, and each block's transactions with
//! its header's tx root; the first DPOS height that does not match is reported. It never repairs anything; it opens
//! the block store as the node does at start (so a torn last record is cut, exactly as the next start would).
//! The witnesses come from the ledger itself (each block's issuance records the witness headers its consensus
//! block carried) and from `witness.bin` (the node's recent witnesses, carried or not). A store that starts at an
//! installed snapshot is audited from its base: the witness order kept there seeds the chain, and DPOS heights at
//! or below the base (vouched for with the snapshot, no longer stored) are not compared.

use std::path::Path;

use anyhow::{bail, Context, Result};
use cas_consensus::rewards::decode_order_state;
use cas_consensus::witness::{
    decode_witness, WitnessChain, WitnessHeader, WitnessLimits, WitnessParams,
};
use cas_engine::codec::{decode_block, to_owned_block};
use cas_engine::genesis::genesis_committee;
use cas_engine::tx::ArchivedTxKind;
use cas_engine::BlockHash;

use cas_node::witness::WitnessFile;

/// What the audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The installed snapshot the store starts after (0: none); heights up to it are not compared.
    pub base: u64,
    /// Stored DPOS blocks above the genesis (the last stored height).
    pub stored: u64,
    /// Witness blocks on the best chain, and the DPOS heights they cover (1..=covered).
    pub witnesses: u64,
    pub covered: u64,
    pub work: u128,
    /// The first stored height that does not match, and why.
    pub first_mismatch: Option<(u64, String)>,
}

/// Reads a node's data folder and compares (see the module header).
pub fn audit(data_dir: &Path) -> Result<Audit> {
    let blocks_dir = data_dir.join("ledger").join("blocks");
    if !blocks_dir.exists() {
        bail!("{} holds no block store", data_dir.display());
    }
    let (store, _) = cas_shards::BlockStore::open(&blocks_dir, &cas_shards::StoreConfig::default())
        .with_context(|| format!("cannot open the block store in {}", blocks_dir.display()))?;
    let durable = store.durable_height().unwrap_or(0);
    // The height of an installed snapshot the store starts after (0: the store starts at genesis).
    let base = store.first_height().saturating_sub(1);
    // Per stored height above the base: the header hash, and whether the body still matches the header's tx root.
    let mut stored: Vec<(BlockHash, bool)> =
        Vec::with_capacity(durable.saturating_sub(base) as usize);
    let mut carried: Vec<WitnessHeader> = Vec::new();
    for height in base + 1..=durable {
        let bytes = store.read(height)?;
        let block = decode_block(&bytes).with_context(|| format!("stored block {height}"))?;
        if let Some(ArchivedTxKind::Issuance { evidence, .. }) =
            block.txs.last().map(|tx| &tx.body.kind)
        {
            for item in evidence.iter() {
                let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(item.len());
                aligned.extend_from_slice(item);
                // Evidence that does not decode is no evidence; the body check below still covers the block.
                if let Ok(header) = decode_witness(&aligned) {
                    carried.push(header);
                }
            }
        }
        let body_matches =
            block.compute_tx_root() == cas_engine::Hash32::from(&block.header.tx_root);
        stored.push((block.header.hash(), body_matches));
    }

    let genesis_bytes = if base > 0 {
        let path = data_dir.join("ledger").join("genesis.block");
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
    } else {
        store.read(0)?
    };
    let genesis = to_owned_block(decode_block(&genesis_bytes).context("the stored genesis")?);
    let (_, chain_params) =
        genesis_committee(&genesis).context("the stored genesis names no parameters")?;
    let mut headers = carried;
    headers.extend(WitnessFile::new(data_dir).load()?);
    let params = WitnessParams {
        span: chain_params.witness_span,
        ..WitnessParams::default()
    };
    // Nothing is forgotten: the audit walks the whole chain.
    let limits = WitnessLimits {
        finalized_kept: params.span as usize,
        depth_kept: u64::MAX / 2,
    };
    let mut chain = if base > 0 {
        // The ledger's witness order at the base, as the node restores it; the DPOS hashes it kept are not needed.
        let bytes = cas_node::durable::WitnessBaseFile::new(data_dir).load(base)?;
        let mut state = decode_order_state(&bytes)
            .with_context(|| format!("the witness order kept at the base {base}"))?;
        state.chain.finalized.clear();
        state.chain.finalized_first = base + 1;
        WitnessChain::restore(params, limits, state.chain)
            .with_context(|| format!("the witness order kept at the base {base}"))?
            .into_detached()
    } else {
        WitnessChain::detached(params, limits)
    };
    for header in headers {
        // A stored witness that does not stand on its own work is no evidence; it is left out.
        if !chain.contains(&header.hash()) {
            let _ = chain.insert(header, u64::MAX);
        }
    }
    let best = chain.best_chain();
    let mut audit = Audit {
        base,
        stored: durable,
        witnesses: best.len() as u64,
        covered: 0,
        work: chain.best_work(),
        first_mismatch: None,
    };
    for hash in &best {
        let header = chain.get(hash).expect("on the best chain");
        for (offset, witnessed) in header.dpos_hashes.iter().enumerate() {
            let height = header.first_dpos_height + offset as u64;
            audit.covered = height;
            if height <= base {
                continue;
            }
            let problem = match stored.get((height - base) as usize - 1) {
                None => Some(format!(
                    "witnessed by witness {} but not stored (stored up to {durable})",
                    header.height
                )),
                Some((_, false)) => {
                    Some("its transactions do not match its header's tx root".to_string())
                }
                Some((hash, true)) if hash != witnessed => Some(format!(
                    "stored hash {hash}, witness {} committed to {witnessed}",
                    header.height
                )),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                audit.first_mismatch = Some((height, problem));
                return Ok(audit);
            }
        }
    }
    Ok(audit)
}

pub fn verify(data_dir: &Path) -> Result<()> {
    let audit = audit(data_dir)?;
    if let Some((height, problem)) = &audit.first_mismatch {
        bail!("DPOS block {height} does not match the witness chain: {problem}");
    }
    if audit.base > 0 {
        println!(
            "the store starts after the snapshot installed at DPOS block {}; blocks up to it are not compared",
            audit.base
        );
    }
    println!(
        "witness chain: {} blocks, cumulative work {}; DPOS blocks 1..={} of {} stored match it",
        audit.witnesses, audit.work, audit.covered, audit.stored
    );
    if audit.covered < audit.stored {
        println!(
            "DPOS blocks {}..={} are not witnessed yet",
            audit.covered + 1,
            audit.stored
        );
    }
    Ok(())
}
