//! CAS transport (skeleton; the crate doc is completed with the node).
pub mod error;
pub mod frame;
pub mod limits;
