//! ldm-trainer: data pipeline, layers with forward and backward passes, losses, training loops.

pub mod checkpoint;
pub mod data;
pub mod export;
pub mod init;
pub mod layers;
pub mod losses;
pub mod models;
pub mod optim;
pub mod params;
pub mod schedule;
pub mod train;
