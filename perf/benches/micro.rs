//! Micro benchmarks of the engine's hot paths (`cargo bench -p cas-perf --bench micro`). Each group carries its
//! peer in the same run: batched verification beside single verification, validated access beside unchecked.

use std::sync::LazyLock;

use cas_engine::codec::{access_block_trusted, decode_block, encode_block, encode_tx};
use cas_engine::commitment::SetCommitment;
use cas_engine::crypto::{verify_batch, verify_batch_sized, verify_one, BatchSizer, SigEntry};
use cas_engine::rules::{apply_batch, TxError};
use cas_engine::{ArchivedTransaction, MemoryLedger, Transaction, TxId};
use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use rkyv::util::AlignedVec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BLOCK_TXS: u32 = 10_000;

/// 10,000 signed transfers and their ledger, built once.
static LOAD: LazyLock<(MemoryLedger, Vec<Transaction>)> =
    LazyLock::new(|| cas_perf::transfers(BLOCK_TXS));

/// (tx id, public key, signature) of one transfer.
type Signed = (TxId, [u8; 32], [u8; 64]);

/// Every transfer's signature.
static SIGNED: LazyLock<Vec<Signed>> = LazyLock::new(|| {
    LOAD.1
        .iter()
        .map(|tx| {
            (
                tx.tx_id(),
                tx.signatures[0].key.0,
                tx.signatures[0].signature.0,
            )
        })
        .collect()
});

static BLOCK_BYTES: LazyLock<AlignedVec> =
    LazyLock::new(|| encode_block(&cas_perf::block_of(LOAD.1.clone())));

fn entries(count: usize) -> Vec<SigEntry<'static>> {
    SIGNED[..count]
        .iter()
        .map(|(id, key, signature)| SigEntry {
            message: &id.0,
            key,
            signature,
        })
        .collect()
}

/// The first `signatures.len()` transfers' entries, each with the signature given (a corrupted copy, for the bad).
fn entries_signed_by(signatures: &[[u8; 64]]) -> Vec<SigEntry<'_>> {
    SIGNED[..signatures.len()]
        .iter()
        .zip(signatures)
        .map(|((id, key, _), signature)| SigEntry {
            message: &id.0,
            key,
            signature,
        })
        .collect()
}

fn main() {
    divan::main();
}

mod verify {
    use super::*;

    /// ed25519-dalek's own single verification: the reference peer.
    #[divan::bench]
    fn single_dalek(bencher: Bencher) {
        let (id, key, signature) = SIGNED[0];
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        bencher
            .counter(ItemsCount::new(1usize))
            .bench(|| key.verify_strict(black_box(&id.0), &signature).is_ok());
    }

    /// Our cofactored single verification (what a failing batch falls back to).
    #[divan::bench]
    fn single_cofactored(bencher: Bencher) {
        let entry = entries(1)[0];
        bencher
            .counter(ItemsCount::new(1usize))
            .bench(|| verify_one(black_box(&entry)));
    }

    #[divan::bench(args = [16, 32, 48, 64, 96, 128, 256, 1024, 4096])]
    fn batched(bencher: Bencher, size: usize) {
        let batch = entries(size);
        bencher
            .counter(ItemsCount::new(size))
            .bench(|| verify_batch(black_box(&batch)));
    }

    /// ed25519-dalek's own batch verification on the same signatures (keys decompressed outside the loop, as its
    /// API requires): the library peer of `batched`.
    #[divan::bench(args = [64, 1024])]
    fn batched_dalek(bencher: Bencher, size: usize) {
        let messages: Vec<&[u8]> = SIGNED[..size].iter().map(|s| &s.0 .0[..]).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = SIGNED[..size]
            .iter()
            .map(|s| ed25519_dalek::VerifyingKey::from_bytes(&s.1).unwrap())
            .collect();
        let signatures: Vec<ed25519_dalek::Signature> = SIGNED[..size]
            .iter()
            .map(|s| ed25519_dalek::Signature::from_bytes(&s.2))
            .collect();
        bencher.counter(ItemsCount::new(size)).bench(|| {
            ed25519_dalek::verify_batch(black_box(&messages), &signatures, &keys).is_ok()
        });
    }

    /// Admission's case: one bad signature in 300 (the share `cas local`'s load sends), checked in calls of 200
    /// (what a node admits in a few milliseconds at 5,000 tx/s). `fresh`: every call starts from full batches, so
    /// about half the calls bisect a batch of 200; `carried`: one `BatchSizer` across the calls (and across the
    /// bench's iterations), as the Synchronizer keeps it, so the batches shrink to the size that share makes cheapest.
    #[divan::bench(args = ["fresh", "carried"])]
    fn stream_one_bad_in_300(bencher: Bencher, sizing: &str) {
        const STREAM: usize = 6000;
        let mut signatures: Vec<[u8; 64]> = SIGNED[..STREAM].iter().map(|s| s.2).collect();
        for signature in signatures.iter_mut().skip(150).step_by(300) {
            signature[40] ^= 1;
        }
        let stream = entries_signed_by(&signatures);
        let sizer = std::sync::Mutex::new(BatchSizer::new());
        let carried = sizing == "carried";
        bencher.counter(ItemsCount::new(STREAM)).bench(|| {
            let mut bad = 0;
            for call in stream.chunks(200) {
                bad += match carried {
                    true => verify_batch_sized(black_box(call), &mut sizer.lock().unwrap()).len(),
                    false => verify_batch(black_box(call)).len(),
                };
            }
            assert_eq!(bad, STREAM / 300);
        });
    }

    /// A batch of 1,024 with one bad signature: the price of bisection.
    #[divan::bench]
    fn batched_1024_one_bad(bencher: Bencher) {
        let mut signatures: Vec<[u8; 64]> = SIGNED[..1024].iter().map(|s| s.2).collect();
        signatures[600][40] ^= 1;
        let batch = entries_signed_by(&signatures);
        bencher
            .counter(ItemsCount::new(1024usize))
            .bench(|| verify_batch(black_box(&batch)));
    }
}

mod hash {
    use super::*;

    #[divan::bench]
    fn blake3_256_bytes(bencher: Bencher) {
        let bytes = [7u8; 256];
        bencher
            .counter(BytesCount::new(256usize))
            .bench(|| blake3::hash(black_box(&bytes)));
    }

    /// One UTXO set commitment update (LtHash16: the element's blake3 hash, its 2 KiB AES-256-CTR keystream, 1,024
    /// lane additions).
    #[divan::bench]
    fn utxo_commitment_insert(bencher: Bencher) {
        let tx = &LOAD.1[0];
        let outpoint = cas_engine::OutPoint {
            tx: tx.tx_id(),
            index: 0,
        };
        let mut set = SetCommitment::default();
        bencher
            .counter(ItemsCount::new(1usize))
            .bench_local(|| set.insert(black_box(&outpoint), &tx.body.outputs[0]));
    }

    /// A block's worth of updates as a shard commits them: 1,024 elements through `SetCommitment::apply` (hashes
    /// sixteen at a time, AES key schedules four at a time), per element beside `utxo_commitment_insert`.
    #[divan::bench]
    fn utxo_commitment_apply_1024(bencher: Bencher) {
        let created: Vec<(cas_engine::OutPoint, cas_engine::TxOutput)> = LOAD.1[..1024]
            .iter()
            .map(|tx| {
                let outpoint = cas_engine::OutPoint {
                    tx: tx.tx_id(),
                    index: 0,
                };
                (outpoint, tx.body.outputs[0])
            })
            .collect();
        let mut set = SetCommitment::default();
        bencher
            .counter(ItemsCount::new(created.len()))
            .bench_local(|| set.apply(&[], black_box(&created)));
    }
}

mod codec {
    use super::*;

    #[divan::bench]
    fn encode_block_10k(bencher: Bencher) {
        let block = cas_perf::block_of(LOAD.1.clone());
        bencher
            .counter(ItemsCount::new(BLOCK_TXS))
            .bench(|| encode_block(black_box(&block)));
    }

    /// The untrusted path: bounds plus bytecheck over the whole 10,000-tx block.
    #[divan::bench]
    fn validated_access_block_10k(bencher: Bencher) {
        let bytes = &*BLOCK_BYTES;
        bencher
            .counter(ItemsCount::new(BLOCK_TXS))
            .bench(|| decode_block(black_box(bytes)).map(|b| b.txs.len()).unwrap());
    }

    /// The trusted path: read in place, here summing every fee so the access is real.
    #[divan::bench]
    fn unchecked_access_block_10k(bencher: Bencher) {
        let bytes = &*BLOCK_BYTES;
        bencher.counter(ItemsCount::new(BLOCK_TXS)).bench(|| {
            // SAFETY: the bytes were encoded by this process.
            let block = unsafe { access_block_trusted(black_box(bytes)) };
            block
                .txs
                .iter()
                .map(|tx| tx.body.fee.to_native())
                .sum::<u64>()
        });
    }

    #[divan::bench]
    fn tx_id_in_place(bencher: Bencher) {
        let bytes = encode_tx(&LOAD.1[0]);
        let tx = cas_engine::codec::decode_tx(&bytes).unwrap();
        bencher
            .counter(ItemsCount::new(1usize))
            .bench(|| black_box(tx).tx_id());
    }
}

mod rules {
    use super::*;

    /// UTXO rules for 10,000 transfers against an in-memory view (signatures already checked): per-tx cost.
    #[divan::bench]
    fn apply_batch_10k(bencher: Bencher) {
        let (ledger, _) = &*LOAD;
        let block = unsafe { access_block_trusted(&BLOCK_BYTES) };
        let txs: Vec<&ArchivedTransaction> = block.txs.iter().collect();
        let ids: Vec<TxId> = txs.iter().map(|tx| tx.tx_id()).collect();
        let verdicts: Vec<Result<(), TxError>> = vec![Ok(()); txs.len()];
        let ctx = ledger.context_for(1);
        bencher.counter(ItemsCount::new(BLOCK_TXS)).bench(|| {
            let outcome = apply_batch(black_box(&txs), &ids, &verdicts, ledger.utxos(), &ctx);
            assert!(outcome.verdicts.iter().all(Result::is_ok));
            outcome
        });
    }
}
