//! ldm-runtime: loads a blob, plans every buffer up front, runs the sampler and the decoder.
