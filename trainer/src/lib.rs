//! ldm-trainer: data pipeline, layers with forward and backward passes, losses, training loops.
