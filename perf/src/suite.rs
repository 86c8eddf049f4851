//! The micro summary of `cas bench`: each hot path measured on one core for a fixed time, beside its peer or limit
//! measured in the same run (batched against single verification, blake3 against memcpy, validated against
//! unchecked block access, UTXO rules against the signature work they follow, the block store against raw
//! O_DIRECT writes with fdatasync of the same sizes). Figures are the best of a few passes: a limit is what the
//! machine can do, not what a noisy moment let it do.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use cas_engine::codec::{access_block_trusted, decode_block, encode_block};
use cas_engine::crypto::{verify_batch, verify_one, SigEntry};
use cas_engine::rules::{apply_batch, TxError};
use cas_engine::{ArchivedTransaction, TxId};
use cas_shards::{BlockStore, StoreConfig};
use serde::Serialize;

use crate::pipeline::temp_dir;

/// One figure beside its peer (or limit), both in the same unit, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: f64,
    pub peer_name: &'static str,
    pub peer_value: f64,
}

impl Figure {
    pub fn ratio(&self) -> f64 {
        self.value / self.peer_value
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MicroSummary {
    /// Batched ed25519 verifications per second on one core (batches of [`VERIFY_BATCH`]).
    pub verify_batched_per_core_s: f64,
    pub figures: Vec<Figure>,
}

pub const VERIFY_BATCH: usize = 1_024;

/// How long each side of a figure is measured, per pass.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub per_pass: Duration,
    pub passes: usize,
}

impl Budget {
    pub fn quick() -> Budget {
        Budget {
            per_pass: Duration::from_millis(300),
            passes: 2,
        }
    }

    pub fn full() -> Budget {
        Budget {
            per_pass: Duration::from_millis(1_000),
            passes: 3,
        }
    }
}

/// Items per second of `work` (which handles `items` per call): the best pass.
fn rate(budget: Budget, items: f64, mut work: impl FnMut()) -> f64 {
    work(); // warm caches and lazy set-up
    (0..budget.passes)
        .map(|_| {
            let started = Instant::now();
            let mut calls = 0u64;
            while started.elapsed() < budget.per_pass {
                work();
                calls += 1;
            }
            calls as f64 * items / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Runs the summary; `progress` hears the name of each figure as it starts.
pub fn micro(budget: Budget, mut progress: impl FnMut(&str)) -> MicroSummary {
    let (ledger, txs) = crate::transfers(10_000);
    let block_bytes = encode_block(&crate::block_of(txs.clone()));
    let signed: Vec<(TxId, [u8; 32], [u8; 64])> = txs
        .iter()
        .map(|tx| {
            (
                tx.tx_id(),
                tx.signatures[0].key.0,
                tx.signatures[0].signature.0,
            )
        })
        .collect();
    let entries: Vec<SigEntry<'_>> = signed
        .iter()
        .map(|(id, key, signature)| SigEntry {
            message: &id.0,
            key,
            signature,
        })
        .collect();
    let mut figures = Vec::new();

    progress("signature verification");
    let batch = &entries[..VERIFY_BATCH];
    let batched = rate(budget, VERIFY_BATCH as f64, || {
        assert!(verify_batch(black_box(batch)).is_empty());
    });
    let single = rate(budget, 1.0, || assert!(verify_one(black_box(&entries[0]))));
    figures.push(Figure {
        name: "batched ed25519 verification, 1 core (keys seen before)",
        unit: "signatures/s",
        value: batched,
        peer_name: "single verification",
        peer_value: single,
    });
    let cold = cold_key_rate(budget);
    figures.push(Figure {
        name: "batched ed25519 verification, 1 core (keys never seen)",
        unit: "signatures/s",
        value: cold,
        peer_name: "keys seen before",
        peer_value: batched,
    });

    progress("blake3");
    let buffer = vec![7u8; 1 << 20];
    let mut copy = vec![0u8; 1 << 20];
    let hashed = rate(budget, buffer.len() as f64 / 1e6, || {
        black_box(blake3::hash(black_box(&buffer)));
    });
    let copied = rate(budget, buffer.len() as f64 / 1e6, || {
        copy.copy_from_slice(black_box(&buffer));
        black_box(&copy);
    });
    figures.push(Figure {
        name: "blake3 hashing, 1 core",
        unit: "MB/s",
        value: hashed,
        peer_name: "memcpy",
        peer_value: copied,
    });

    progress("codec");
    let block_mb = block_bytes.len() as f64 / 1e6;
    let validated = rate(budget, block_mb, || {
        let decoded = decode_block(black_box(&block_bytes)).expect("the block is valid");
        assert_eq!(decoded.txs.len(), txs.len());
    });
    let unchecked = rate(budget, block_mb, || {
        // SAFETY: the bytes were encoded by this process.
        let block = unsafe { access_block_trusted(black_box(&block_bytes)) };
        black_box(
            block
                .txs
                .iter()
                .map(|tx| tx.body.fee.to_native())
                .sum::<u64>(),
        );
    });
    figures.push(Figure {
        name: "untrusted block decode (bounds + bytecheck)",
        unit: "MB/s",
        value: validated,
        peer_name: "unchecked in-place access",
        peer_value: unchecked,
    });

    progress("UTXO rules");
    // SAFETY: the bytes were encoded by this process.
    let block = unsafe { access_block_trusted(&block_bytes) };
    let archived: Vec<&ArchivedTransaction> = block.txs.iter().collect();
    let ids: Vec<TxId> = archived.iter().map(|tx| tx.tx_id()).collect();
    let verdicts: Vec<Result<(), TxError>> = vec![Ok(()); archived.len()];
    let context = ledger.context_for(1);
    let applied = rate(budget, archived.len() as f64, || {
        let outcome = apply_batch(
            black_box(&archived),
            &ids,
            &verdicts,
            ledger.utxos(),
            &context,
        );
        assert!(outcome.verdicts.iter().all(Result::is_ok));
    });
    figures.push(Figure {
        name: "UTXO rules (signatures already checked), 1 core",
        unit: "tx/s",
        value: applied,
        peer_name: "batched verification (1 signature per tx)",
        peer_value: batched,
    });

    progress("block store");
    figures.push(store_figure(budget, &block_bytes));

    MicroSummary {
        verify_batched_per_core_s: batched,
        figures,
    }
}

/// Batched verifications per second where every key is new to this thread's key cache: more distinct signers than
/// the cache has slots, cycled, so decompression is paid as for a first-time signer.
fn cold_key_rate(budget: Budget) -> f64 {
    const SIGNERS: u32 = 3 * cas_engine::crypto::KEY_CACHE_SLOTS as u32;
    const NAMESPACE: u8 = 0xc0;
    let message = *b"cold key benchmark message, 32 b";
    let signed: Vec<([u8; 32], [u8; 64])> = (0..SIGNERS)
        .map(|i| {
            let keypair = cas_engine::fixtures::key(NAMESPACE, i);
            (keypair.public().0, keypair.sign(&message).0)
        })
        .collect();
    let batches: Vec<Vec<SigEntry<'_>>> = signed
        .chunks(VERIFY_BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(key, signature)| SigEntry {
                    message: &message,
                    key,
                    signature,
                })
                .collect()
        })
        .collect();
    let mut next = 0;
    rate(budget, VERIFY_BATCH as f64, || {
        assert!(verify_batch(black_box(&batches[next])).is_empty());
        next = (next + 1) % batches.len();
    })
}

/// The block store's durable appends of `payload` against raw O_DIRECT writes + fdatasync of the same record size.
fn store_figure(budget: Budget, payload: &[u8]) -> Figure {
    let dir = temp_dir("store");
    let (mut store, _) =
        BlockStore::open(&dir.join("store"), &StoreConfig::default()).expect("a fresh store opens");
    let mut height = 0u64;
    let stored = rate(budget, payload.len() as f64 / 1e6, || {
        store
            .append_durable(height, payload.to_vec())
            .expect("append");
        height += 1;
    });
    drop(store);
    let raw = raw_direct_write_rate(budget, &dir.join("raw"), payload.len());
    let _ = std::fs::remove_dir_all(&dir);
    Figure {
        name: "block store append + fdatasync (one block per record)",
        unit: "MB/s",
        value: stored,
        peer_name: "raw O_DIRECT write + fdatasync, same size",
        peer_value: raw,
    }
}

const DIRECT_ALIGN: usize = 4_096;

/// MB/s of appending `len`-byte (rounded up to 4 KiB) writes with O_DIRECT, each followed by fdatasync.
fn raw_direct_write_rate(budget: Budget, path: &Path, len: usize) -> f64 {
    let padded = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    let layout = std::alloc::Layout::from_size_align(padded, DIRECT_ALIGN).expect("a valid layout");
    // SAFETY: the layout has a non-zero size; the buffer is freed below with the same layout.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buffer.is_null(), "allocation failed");
    // SAFETY: `buffer` points to `padded` initialised (zeroed) bytes that live until dealloc below.
    let bytes = unsafe { std::slice::from_raw_parts(buffer, padded) };
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("the temp dir takes an O_DIRECT file");
    let mut offset = 0u64;
    let result = rate(budget, len as f64 / 1e6, || {
        file.write_all_at(bytes, offset).expect("direct write");
        file.sync_data().expect("fdatasync");
        offset += padded as u64;
    });
    drop(file);
    // SAFETY: allocated above with this layout, no reference to it remains.
    unsafe { std::alloc::dealloc(buffer, layout) };
    result
}
