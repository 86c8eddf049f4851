//! A light (SPV) client's header chain: it keeps ledger block headers only, never blocks, and takes a header as
//! certified once a committee's [`LedgerCert`] vouches for it, on the header itself or on a later one whose parent
//! hashes lead back to it. Payments are then checked against the headers held ([`payment`]). Sans-IO: headers,
//! certificates and hand-overs go in, verdicts come out; fetching and storing are the driver's (`cas wallet`).
//! It must never hold as certified a header no verified certificate reached, nor trust a header a proof carries.
//!
//! Committees follow [`CommitteeHandover`]s from the genesis committee, exactly as a receipt's check does
//! ([`crate::receipt`]): a certificate of epoch `e` must be signed by epoch `e`'s committee, and its height must lie
//! in that epoch's heights.

pub mod payment;
pub mod store;

use cas_engine::{BlockHash, BlockHeader, Hash32};

use crate::committee::Committee;
use crate::ledger_cert::{
    committee_for, follow_handovers, verify_ledger_cert, CommitteeHandover, EpochCommittee,
    EpochError, HandoverError, LedgerCert,
};
use crate::messages::CertError;

/// Headers held above the certified tip while no certificate reached them (a committee certifies nearly every
/// block; a source that sends this many without one is not worth following).
pub const PENDING_HEADERS_MAX: usize = 256;

/// What the chain keeps of a header it holds as certified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertifiedHeader {
    pub hash: BlockHash,
    pub tx_root: Hash32,
    /// What the certificate on this very header said, when one came with it; None when a later header's
    /// certificate vouches for it through the parent hashes (its results root is then unknown here).
    pub own_cert: Option<OwnCert>,
}

/// The parts of a header's own certificate the chain keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnCert {
    pub epoch: u64,
    pub results_root: Hash32,
}

/// What a header did to the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// It links, and waits for a certificate; `pending` headers wait now.
    Held { pending: usize },
    /// Its certificate verified: heights `from..=to` are certified now.
    Certified { from: u64, to: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpvError {
    #[error("the genesis header is at height {0}, not 0")]
    GenesisHeight(u64),
    #[error("the stored chain does not start at this genesis header")]
    GenesisMismatch,
    #[error("a header of chain {found}, this chain is {expected}")]
    ChainId { found: u32, expected: u32 },
    #[error("a header at height {found} where height {expected} is due")]
    Height { found: u64, expected: u64 },
    #[error("header {height} does not link: its parent is {parent}, the header below is {below}")]
    Link {
        height: u64,
        parent: BlockHash,
        below: BlockHash,
    },
    #[error("header {height} would be the {count}th held without a certificate (at most {PENDING_HEADERS_MAX})")]
    TooManyPending { height: u64, count: usize },
    #[error("the certificate sent with header {height} names chain {chain_id}, height {cert_height}, block {block}: not this header")]
    CertMismatch {
        height: u64,
        chain_id: u32,
        cert_height: u64,
        block: BlockHash,
    },
    #[error("the certificate at height {height}: {source}")]
    Epoch {
        height: u64,
        #[source]
        source: EpochError,
    },
    #[error("the certificate at height {height} does not verify: {source}")]
    Certificate {
        height: u64,
        #[source]
        source: CertError,
    },
    #[error(transparent)]
    Handover(#[from] HandoverError),
    #[error("the hand-overs given drop or change hand-over {position}, which this chain follows already")]
    HandoversRewritten { position: usize },
    #[error("the certificate held at height {height} was signed as epoch {epoch}, which the hand-overs do not give that height: {source}")]
    HandoverConflict {
        height: u64,
        epoch: u64,
        #[source]
        source: EpochError,
    },
}

/// The certified header chain from genesis, and the headers waiting above it for a certificate.
#[derive(Clone, Debug)]
pub struct HeaderChain {
    chain_id: u32,
    genesis_committee: Committee,
    handovers: Vec<CommitteeHandover>,
    /// The committees `handovers` lead to, genesis first.
    committees: Vec<EpochCommittee>,
    /// Indexed by height, from genesis (height 0) to the certified tip.
    headers: Vec<CertifiedHeader>,
    /// Headers above the tip that link, oldest first: (hash, tx root).
    pending: Vec<(BlockHash, Hash32)>,
}

impl HeaderChain {
    /// A chain holding only `genesis` (trusted: it comes from the genesis file) and its committee.
    pub fn new(genesis: &BlockHeader, committee: Committee) -> Result<HeaderChain, SpvError> {
        if genesis.height != 0 {
            return Err(SpvError::GenesisHeight(genesis.height));
        }
        let chain_id = genesis.chain_id;
        Ok(HeaderChain {
            chain_id,
            committees: follow_handovers(chain_id, committee.clone(), &[])?,
            genesis_committee: committee,
            handovers: Vec::new(),
            headers: vec![CertifiedHeader {
                hash: genesis.hash(),
                tx_root: genesis.tx_root,
                own_cert: None,
            }],
            pending: Vec::new(),
        })
    }

    /// A chain restored from what [`HeaderChain::headers`] and [`HeaderChain::handovers`] gave (the driver's own
    /// file): the first header must be `genesis`, and every certificate held must fit the hand-overs.
    pub fn restore(
        genesis: &BlockHeader,
        committee: Committee,
        handovers: &[CommitteeHandover],
        headers: Vec<CertifiedHeader>,
    ) -> Result<HeaderChain, SpvError> {
        let mut chain = HeaderChain::new(genesis, committee)?;
        if headers.first() != chain.headers.first() {
            return Err(SpvError::GenesisMismatch);
        }
        chain.headers = headers;
        chain.follow(handovers)?;
        Ok(chain)
    }

    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The highest certified height.
    pub fn tip(&self) -> u64 {
        self.headers.len() as u64 - 1
    }

    /// The height the next header pushed must have.
    pub fn next_height(&self) -> u64 {
        self.tip() + 1 + self.pending.len() as u64
    }

    /// Headers waiting for a certificate.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The certified header at `height`.
    pub fn header(&self, height: u64) -> Option<&CertifiedHeader> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.headers.get(h))
    }

    /// Every certified header, genesis first (what the driver stores).
    pub fn headers(&self) -> &[CertifiedHeader] {
        &self.headers
    }

    /// The hand-overs followed (what the driver stores).
    pub fn handovers(&self) -> &[CommitteeHandover] {
        &self.handovers
    }

    /// The newest epoch the hand-overs reach.
    pub fn last_epoch(&self) -> u64 {
        self.committees.last().expect("genesis first").epoch
    }

    /// The committees the hand-overs lead to, genesis first.
    pub fn committees(&self) -> &[EpochCommittee] {
        &self.committees
    }

    /// Takes the hand-overs from genesis (a node's `GET /v1/handovers`): they must verify, keep every hand-over
    /// followed already, and give every certificate held its epoch's heights. Nothing changes on an error.
    pub fn follow(&mut self, handovers: &[CommitteeHandover]) -> Result<(), SpvError> {
        if let Some(position) =
            (0..self.handovers.len()).find(|&i| handovers.get(i) != self.handovers.get(i))
        {
            return Err(SpvError::HandoversRewritten { position });
        }
        let committees =
            follow_handovers(self.chain_id, self.genesis_committee.clone(), handovers)?;
        for (height, header) in self.headers.iter().enumerate() {
            if let Some(own) = header.own_cert {
                committee_for(&committees, own.epoch, height as u64).map_err(|source| {
                    SpvError::HandoverConflict {
                        height: height as u64,
                        epoch: own.epoch,
                        source,
                    }
                })?;
            }
        }
        self.committees = committees;
        self.handovers = handovers.to_vec();
        Ok(())
    }

    /// Takes the next header in height order, with the committee's certificate on it when the source holds one.
    /// On an error the headers held without a certificate are dropped: the source lied or broke, and the driver
    /// asks again from [`HeaderChain::next_height`].
    pub fn push(
        &mut self,
        header: &BlockHeader,
        cert: Option<&LedgerCert>,
    ) -> Result<Pushed, SpvError> {
        let pushed = self.try_push(header, cert);
        if pushed.is_err() {
            self.pending.clear();
        }
        pushed
    }

    fn try_push(
        &mut self,
        header: &BlockHeader,
        cert: Option<&LedgerCert>,
    ) -> Result<Pushed, SpvError> {
        self.check_link(header)?;
        let hash = header.hash();
        let Some(cert) = cert else {
            if self.pending.len() >= PENDING_HEADERS_MAX {
                return Err(SpvError::TooManyPending {
                    height: header.height,
                    count: self.pending.len() + 1,
                });
            }
            self.pending.push((hash, header.tx_root));
            return Ok(Pushed::Held {
                pending: self.pending.len(),
            });
        };
        let own = self.check_cert(header.height, hash, cert)?;
        let from = self.tip() + 1;
        for (hash, tx_root) in self.pending.drain(..) {
            self.headers.push(CertifiedHeader {
                hash,
                tx_root,
                own_cert: None,
            });
        }
        self.headers.push(CertifiedHeader {
            hash,
            tx_root: header.tx_root,
            own_cert: Some(own),
        });
        debug_assert_eq!(self.tip(), header.height);
        Ok(Pushed::Certified {
            from,
            to: header.height,
        })
    }

    /// The header is of this chain, at the height due, over the last header taken.
    fn check_link(&self, header: &BlockHeader) -> Result<(), SpvError> {
        if header.chain_id != self.chain_id {
            return Err(SpvError::ChainId {
                found: header.chain_id,
                expected: self.chain_id,
            });
        }
        let expected = self.next_height();
        if header.height != expected {
            return Err(SpvError::Height {
                found: header.height,
                expected,
            });
        }
        let below = self
            .pending
            .last()
            .map_or(self.headers.last().expect("genesis first").hash, |p| p.0);
        if header.parent != below {
            return Err(SpvError::Link {
                height: header.height,
                parent: header.parent,
                below,
            });
        }
        Ok(())
    }

    /// The certificate names this header and verifies against its epoch's committee.
    fn check_cert(
        &self,
        height: u64,
        hash: BlockHash,
        cert: &LedgerCert,
    ) -> Result<OwnCert, SpvError> {
        let statement = &cert.statement;
        if statement.chain_id != self.chain_id
            || statement.height != height
            || statement.block != hash
        {
            return Err(SpvError::CertMismatch {
                height,
                chain_id: statement.chain_id,
                cert_height: statement.height,
                block: statement.block,
            });
        }
        self.verify_cert(cert)?;
        Ok(OwnCert {
            epoch: statement.epoch,
            results_root: statement.results_root,
        })
    }

    /// Verifies a certificate against the committee of its epoch, for its height.
    pub fn verify_cert(&self, cert: &LedgerCert) -> Result<(), SpvError> {
        let (height, epoch) = (cert.statement.height, cert.statement.epoch);
        let committee = committee_for(&self.committees, epoch, height)
            .map_err(|source| SpvError::Epoch { height, source })?;
        verify_ledger_cert(cert, &committee.committee)
            .map_err(|source| SpvError::Certificate { height, source })
    }
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
