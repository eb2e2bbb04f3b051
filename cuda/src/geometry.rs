//! Launch geometry of every kernel in `cuda/*.cu`, as plain functions of the problem size so it
//! is unit-tested on the host. Each function validates the limits of the grid (x < 2^31,
//! y and z <= 65535) and of the kernel's indexing, and returns `None`-free, launch-ready values.

use super::error::CudaError;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl Launch {
    /// Threads in the whole launch.
    pub fn threads(&self) -> u64 {
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        gx as u64 * gy as u64 * gz as u64 * bx as u64 * by as u64 * bz as u64
    }
}

/// Largest grid.y / grid.z the hardware accepts.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Largest grid.x the hardware accepts.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;
/// Threads per block of the grid-stride elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Cap on blocks of a grid-stride launch: enough to fill any current GPU many times over; the
/// kernels loop over the rest, so the cap only bounds scheduling overhead.
pub const ELEMENTWISE_MAX_BLOCKS: u64 = 65_536;
/// Threads per block of `ldm_groupnorm_partial_*` (the kernel's kGnThreads).
pub const GROUPNORM_THREADS: u32 = 256;
/// Elements one GroupNorm statistics block aims to reduce (so a 5.7 M-element group of the
/// decoder's full-resolution level spreads over ~700 blocks instead of one).
pub const GROUPNORM_ELEMS_PER_BLOCK: u64 = 8_192;
/// Most splits per (sample, group); bounds the partial-statistics scratch.
pub const GROUPNORM_MAX_SPLITS: u64 = 1_024;
/// Queries per block of the attention kernels (the kernel's kQ).
pub const ATTENTION_QUERIES_PER_BLOCK: u32 = 128;
/// Head sizes the attention kernels are instantiated for.
pub const ATTENTION_HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

fn invalid(kernel: &'static str, reason: String) -> CudaError {
    CudaError::InvalidLaunch { kernel, reason }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a / b + u64::from(a % b != 0)
}

/// A 1-D grid-stride launch over `n` elements; `None` when there is nothing to do.
pub fn elementwise(n: u64) -> Option<Launch> {
    if n == 0 {
        return None;
    }
    let blocks = div_ceil(n, ELEMENTWISE_THREADS as u64).min(ELEMENTWISE_MAX_BLOCKS);
    Some(Launch {
        grid: (blocks as u32, 1, 1),
        block: (ELEMENTWISE_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// The three launches of a GroupNorm plus the fp32 scratch they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNormGeometry {
    /// Elements of one (sample, group): channels / groups * spatial.
    pub group_elems: u64,
    /// Blocks per (sample, group) in the statistics pass.
    pub splits: u32,
    /// Elements per split (the last split may be shorter, never empty).
    pub chunk: u64,
    /// (sample, group) pairs.
    pub rows: u32,
    /// (sample, channel) pairs.
    pub channel_rows: u32,
    pub partial: Launch,
    pub finalize: Launch,
    pub apply: Launch,
}

impl GroupNormGeometry {
    /// Bytes of the partial Welford triples (count, mean, M2) per split.
    pub fn partial_bytes(&self) -> u64 {
        self.rows as u64 * self.splits as u64 * 3 * 4
    }

    /// Bytes of the per-sample [scale[C], shift[C]] output (the CPU's Stats buffer layout).
    pub fn scale_shift_bytes(&self) -> u64 {
        self.channel_rows as u64 * 2 * 4
    }
}

/// Geometry of GroupNorm over an NCDHW tensor with `spatial` = D*H*W voxels per channel.
pub fn groupnorm(
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
) -> Result<GroupNormGeometry, CudaError> {
    const K: &str = "ldm_groupnorm";
    if batch == 0 || channels == 0 || spatial == 0 || groups == 0 {
        return Err(invalid(
            K,
            format!(
                "empty tensor or no groups: batch {batch}, channels {channels}, spatial {spatial}, groups {groups}"
            ),
        ));
    }
    if channels % groups != 0 {
        return Err(invalid(
            K,
            format!("{channels} channels do not split into {groups} groups"),
        ));
    }
    let (batch, channels, spatial, groups) =
        (batch as u64, channels as u64, spatial as u64, groups as u64);
    let rows = batch * groups;
    let channel_rows = batch * channels;
    if rows > MAX_GRID_YZ || channel_rows > MAX_GRID_YZ {
        return Err(invalid(
            K,
            format!("batch x channels = {channel_rows} exceeds the grid limit {MAX_GRID_YZ}"),
        ));
    }
    let group_elems = (channels / groups)
        .checked_mul(spatial)
        .ok_or_else(|| invalid(K, "group size overflows".into()))?;
    let wanted = div_ceil(group_elems, GROUPNORM_ELEMS_PER_BLOCK).clamp(1, GROUPNORM_MAX_SPLITS);
    let chunk = div_ceil(group_elems, wanted);
    let splits = div_ceil(group_elems, chunk);
    let apply_x = div_ceil(spatial, ELEMENTWISE_THREADS as u64 * 4).clamp(1, MAX_GRID_YZ);
    Ok(GroupNormGeometry {
        group_elems,
        splits: splits as u32,
        chunk,
        rows: rows as u32,
        channel_rows: channel_rows as u32,
        partial: Launch {
            grid: (splits as u32, rows as u32, 1),
            block: (GROUPNORM_THREADS, 1, 1),
            shared_bytes: 0,
        },
        finalize: Launch {
            grid: (div_ceil(channel_rows, 128) as u32, 1, 1),
            block: (128, 1, 1),
            shared_bytes: 0,
        },
        apply: Launch {
            grid: (apply_x as u32, channel_rows as u32, 1),
            block: (ELEMENTWISE_THREADS, 1, 1),
            shared_bytes: 0,
        },
    })
}

/// Geometry of flash attention over `tokens` voxels with `channels` = heads * head_dim.
pub fn attention(
    batch: usize,
    channels: usize,
    tokens: usize,
    head_dim: usize,
) -> Result<Launch, CudaError> {
    const K: &str = "ldm_attention";
    if !ATTENTION_HEAD_DIMS.contains(&head_dim) {
        return Err(invalid(
            K,
            format!("head size {head_dim} is not one of {ATTENTION_HEAD_DIMS:?}"),
        ));
    }
    if channels == 0 || channels % head_dim != 0 {
        return Err(invalid(
            K,
            format!("{channels} channels are not a multiple of the head size {head_dim}"),
        ));
    }
    if batch == 0 || tokens == 0 {
        return Err(invalid(
            K,
            format!("empty attention: batch {batch}, tokens {tokens}"),
        ));
    }
    if tokens > i32::MAX as usize {
        return Err(invalid(
            K,
            format!("{tokens} tokens exceed the kernel's 32-bit token index"),
        ));
    }
    let heads = (channels / head_dim) as u64;
    if heads > MAX_GRID_YZ || batch as u64 > MAX_GRID_YZ {
        return Err(invalid(
            K,
            format!("{heads} heads x batch {batch} exceed the grid limit {MAX_GRID_YZ}"),
        ));
    }
    let q_blocks = div_ceil(tokens as u64, ATTENTION_QUERIES_PER_BLOCK as u64);
    Ok(Launch {
        grid: (q_blocks as u32, heads as u32, batch as u32),
        block: (ATTENTION_QUERIES_PER_BLOCK, 1, 1),
        shared_bytes: 0,
    })
}

/// Nearest x2 upsampling of `rows` = N*C channels of d x h x w voxels.
pub fn upsample_nearest2x(rows: usize, dims: [usize; 3]) -> Result<Launch, CudaError> {
    const K: &str = "ldm_upsample_nearest2x";
    if dims.iter().any(|&d| d > i32::MAX as usize / 2) {
        return Err(invalid(
            K,
            format!("dims {dims:?} exceed the kernel's 32-bit extents"),
        ));
    }
    let out = dims
        .iter()
        .try_fold(rows as u64, |acc, &d| acc.checked_mul(2 * d as u64))
        .ok_or_else(|| invalid(K, "output size overflows".into()))?;
    elementwise(out).ok_or_else(|| invalid(K, format!("empty input: rows {rows}, dims {dims:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_covers_small_sizes_exactly_and_caps_large_ones() {
        assert_eq!(elementwise(0), None);
        let l = elementwise(1).unwrap();
        assert_eq!((l.grid, l.block), ((1, 1, 1), (256, 1, 1)));
        assert_eq!(elementwise(256).unwrap().grid.0, 1);
        assert_eq!(elementwise(257).unwrap().grid.0, 2);
        // Bundle latent 8x36x44x28 = 354_816 elements -> 1386 blocks, no cap.
        assert_eq!(elementwise(354_816).unwrap().grid.0, 1386);
        // Decoder output 144x176x112 x 64 channels: capped, the kernel's loop covers the rest.
        let big = elementwise(64 * 144 * 176 * 112).unwrap();
        assert_eq!(big.grid.0 as u64, ELEMENTWISE_MAX_BLOCKS);
        assert!(big.threads() < 64 * 144 * 176 * 112);
    }

    #[test]
    fn groupnorm_splits_cover_every_element_once() {
        // Decoder's full-resolution level: 64 channels, 32 groups, 144x176x112 voxels.
        let spatial = 144 * 176 * 112;
        let g = groupnorm(1, 64, spatial, 32).unwrap();
        assert_eq!(g.group_elems, 2 * spatial as u64);
        assert!(
            g.splits > 100,
            "a big group must spread over many blocks, got {}",
            g.splits
        );
        assert!(
            (g.splits as u64 - 1) * g.chunk < g.group_elems,
            "last split must not be empty"
        );
        assert!(
            g.splits as u64 * g.chunk >= g.group_elems,
            "splits must cover the group"
        );
        assert_eq!(g.partial.grid, (g.splits, 32, 1));
        assert_eq!(g.apply.grid.1, 64);
        assert_eq!(g.partial_bytes(), 32 * g.splits as u64 * 12);
        assert_eq!(g.scale_shift_bytes(), 64 * 8);
        assert_eq!(g.finalize.grid.0, 1);
        // UNet deepest level: 512 channels, 9x11x7 voxels, batch 2: 11088 elements per group,
        // two splits of 5544.
        let g = groupnorm(2, 512, 9 * 11 * 7, 32).unwrap();
        assert_eq!((g.splits, g.chunk, g.rows), (2, 8 * 693, 64));
        assert_eq!(
            g.finalize.grid.0, 8,
            "one thread per (sample, channel): 1024 / 128"
        );
        assert_eq!(g.apply.grid, (1, 1024, 1));
        // Exhaustive cover check on awkward sizes.
        for elems in [1usize, 2, 8191, 8192, 8193, 1_000_003, 9_999_991] {
            let g = groupnorm(1, 1, elems, 1).unwrap();
            let covered: u64 = (0..g.splits as u64)
                .map(|s| (g.group_elems - s * g.chunk).min(g.chunk))
                .sum();
            assert_eq!(covered, elems as u64, "elems {elems}");
            assert!(g.splits as u64 <= GROUPNORM_MAX_SPLITS);
        }
    }

    #[test]
    fn groupnorm_rejects_bad_shapes() {
        assert!(groupnorm(1, 30, 10, 32).is_err());
        assert!(groupnorm(1, 64, 0, 32).is_err());
        assert!(groupnorm(1, 64, 10, 0).is_err());
        assert!(
            groupnorm(2048, 64, 10, 32).is_err(),
            "batch x channels beyond grid.y"
        );
    }

    #[test]
    fn attention_grid_is_queries_by_heads_by_batch() {
        // UNet level 1: 256 channels, head 64 -> 4 heads, 18x22x14 = 5544 tokens.
        let l = attention(1, 256, 5544, 64).unwrap();
        assert_eq!(l.grid, (44, 4, 1));
        assert_eq!(l.block, (128, 1, 1));
        assert!(l.grid.0 * 128 >= 5544 && (l.grid.0 - 1) * 128 < 5544);
        let l = attention(3, 512, 693, 64).unwrap();
        assert_eq!(l.grid, (6, 8, 3));
        assert!(attention(1, 256, 10, 48).is_err(), "no kernel for head 48");
        assert!(
            attention(1, 100, 10, 64).is_err(),
            "channels not a multiple of the head"
        );
        assert!(attention(1, 256, 0, 64).is_err());
    }

    #[test]
    fn upsample_counts_output_voxels() {
        let l = upsample_nearest2x(256, [9, 11, 7]).unwrap();
        assert_eq!(l.grid.0 as u64, div_ceil(256 * 18 * 22 * 14, 256));
        assert!(upsample_nearest2x(0, [1, 1, 1]).is_err());
        assert!(upsample_nearest2x(usize::MAX, [1 << 20, 1 << 20, 1 << 20]).is_err());
    }
}
