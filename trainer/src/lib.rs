//! ldm-trainer: data pipeline, layers with forward and backward passes, losses, training loops.

pub mod data;
pub mod layers;
pub mod losses;
pub mod models;
pub mod params;
pub mod schedule;
