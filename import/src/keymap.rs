//! Key mapping from monai >= 1.4 state-dict names to MONAI Generative 0.2.3 names (the blob's).
//!
//! Found by diffing the fixtures' `*_monai.pt` against `*.pt` key lists:
//! - upsampling convs: `...upsampler.postconv.conv.*` and the autoencoder decoder's
//!   `decoder.blocks.N.postconv.conv.*` -> `.conv.conv.*`;
//! - UNet attention: `...attentions.N.attn.to_{q,k,v}.*` and `middle_block.attention.attn.to_*`
//!   -> without the `attn` level; monai's output projection `attn.out_proj` -> `proj_attn`.
//!
//! Generative-named keys pass through unchanged, so one function serves both namings.

/// The generative 0.2.3 name of a state-dict key.
pub fn to_generative(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        let next = parts.get(i + 1).copied();
        match (p, next) {
            ("postconv", _) => out.push("conv"),
            ("attn", Some("to_q" | "to_k" | "to_v")) => {}
            ("attn", Some("out_proj")) => {
                out.push("proj_attn");
                i += 1;
            }
            _ => out.push(p),
        }
        i += 1;
    }
    out.join(".")
}

/// Whether a (generative-named) key belongs to an attention output projection.
pub fn is_proj_attn(key: &str) -> bool {
    key.split('.').any(|p| p == "proj_attn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_monai_names() {
        assert_eq!(
            to_generative("decoder.blocks.3.postconv.conv.weight"),
            "decoder.blocks.3.conv.conv.weight"
        );
        assert_eq!(
            to_generative("up_blocks.0.upsampler.postconv.conv.bias"),
            "up_blocks.0.upsampler.conv.conv.bias"
        );
        assert_eq!(
            to_generative("down_blocks.1.attentions.0.attn.to_q.weight"),
            "down_blocks.1.attentions.0.to_q.weight"
        );
        assert_eq!(
            to_generative("middle_block.attention.attn.to_v.bias"),
            "middle_block.attention.to_v.bias"
        );
        assert_eq!(
            to_generative("middle_block.attention.attn.out_proj.weight"),
            "middle_block.attention.proj_attn.weight"
        );
    }

    #[test]
    fn generative_names_unchanged() {
        for k in [
            "decoder.blocks.3.conv.conv.weight",
            "down_blocks.1.attentions.0.to_q.weight",
            "middle_block.attention.proj_attn.bias",
            "time_embed.0.weight",
            "out.2.conv.bias",
        ] {
            assert_eq!(to_generative(k), k);
        }
        assert!(is_proj_attn("middle_block.attention.proj_attn.bias"));
        assert!(!is_proj_attn("middle_block.attention.to_q.bias"));
    }
}
