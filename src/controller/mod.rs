//! Controller: Raft metadata quorum and the metadata image.

pub mod image;
pub mod records;
