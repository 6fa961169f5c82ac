//! vigil: an edge appliance that records IP cameras to HLS, never stops recording, and distributes the footage
//! over a private IPFS network. This library holds everything the `vigil` binary runs; see `docs/` for the
//! architecture.

pub mod auth;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod control;
pub mod error;
pub mod hls;
pub mod index;
pub mod ipfs;
pub mod metrics;
pub mod mirror;
pub mod pipeline;
pub mod playlists;
pub mod process;
pub mod retention;
pub mod service;
pub mod transcode;
pub mod tree;
pub mod verify;
pub mod web;

pub use error::{Error, Result};
