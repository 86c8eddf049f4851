//! CAS transport (crate doc completed below).
pub mod broadcast;
pub mod error;
pub mod frame;
pub mod identity;
pub mod ingest;
pub mod limits;
pub mod node;
pub mod peer;
mod thread;
