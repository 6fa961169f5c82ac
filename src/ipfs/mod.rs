//! IPFS: our Kubo RPC client, the IPFS Cluster REST client, and the `IpfsLink` actor that tracks whether the
//! node's API is up (the pipeline stages wait on it instead of hammering a dead daemon).

pub mod cluster;
pub mod kubo;
pub mod link;
