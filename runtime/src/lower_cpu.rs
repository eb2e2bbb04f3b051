//! The CPU backend's lowering of the backend-neutral graph (`graph::Graph` + `model::Params`):
//! packs every weight matrix once for the GEMM (and plans the Winograd transform of the 3x3x3
//! convolutions it applies to), chooses how many output planes a normalised or in-place
//! convolution produces per slab, and sizes the workspaces the executor (`exec`, `slab`) uses.

use crate::conv::{self, winograd, ConvGeom, ConvWeights};
use crate::error::RuntimeError;
use crate::gemm::PackedA;
use crate::graph::{Graph, Op};
use crate::model::Params;

/// The weights as the CPU kernels read them; indices are those of `model::Params`.
#[derive(Debug)]
pub struct CpuParams {
    /// Packed matrices; 3x3x3 convolutions planned as Winograd are transformed by
    /// `transform_winograd`.
    pub convs: Vec<ConvWeights>,
    pub vecs: Vec<Vec<f32>>,
    /// Convolutions planned as Winograd but not transformed yet (index in `convs`, upsampling
    /// of their input): the transform waits for `transform_winograd`, so that a plan refused
    /// for its size (the choice depends on the latent shape) never allocates it.
    pending_winograd: Vec<(usize, u32)>,
}

impl CpuParams {
    /// Packs `params` (each matrix freed once packed) for the convolutions of `graphs`; with
    /// `mode` Winograd, every convolution `winograd::applies` to is planned as Winograd.
    pub fn lower(params: Params, graphs: &[&Graph], mode: winograd::ConvMode) -> CpuParams {
        let Params { matrices, vecs } = params;
        let convs = matrices.into_iter().map(|m| ConvWeights::Direct(PackedA::pack(&m.data, m.m, m.k))).collect();
        let mut pending_winograd = Vec::new();
        for op in graphs.iter().flat_map(|g| &g.ops) {
            if let Op::Conv { g, w, .. } = *op {
                if runs_winograd(&g, mode) {
                    pending_winograd.push((w, g.up));
                }
            }
        }
        CpuParams { convs, vecs, pending_winograd }
    }

    /// Bytes of every parameter, the pending Winograd transforms counted at their final size.
    pub fn bytes(&self) -> usize {
        let conv_bytes = |(i, c): (usize, &ConvWeights)| match (c, self.pending_winograd.iter().find(|p| p.0 == i)) {
            (ConvWeights::Direct(p), Some(&(_, up))) => winograd::WinogradWeights::bytes_for(p.m, p.k / 27, up),
            _ => c.bytes(),
        };
        self.convs.iter().enumerate().map(conv_bytes).sum::<usize>() + self.vecs.iter().map(|v| v.len() * 4).sum::<usize>()
    }

    /// Transforms the weights of every convolution planned as Winograd (once, at allocation).
    pub fn transform_winograd(&mut self) {
        for (w, up) in std::mem::take(&mut self.pending_winograd) {
            if let Some(ConvWeights::Direct(p)) = self.convs.get(w) {
                let u = winograd::WinogradWeights::new(&p.unpack(), p.m, p.k / 27, up);
                self.convs[w] = ConvWeights::Winograd(u);
            }
        }
    }
}

/// Whether convolution `g` runs as Winograd in conv mode `mode` (its weights are transformed and
/// its pack workspace sized for it).
fn runs_winograd(g: &ConvGeom, mode: winograd::ConvMode) -> bool {
    mode == winograd::ConvMode::Winograd && winograd::applies(g)
}

/// Output planes per slab of a convolution whose input is normalised (or staged, in place)
/// into the norm workspace: as many as keep one slab of input planes, halo included, within
/// `slab_bytes` (at least one).
pub fn slab_planes(g: &ConvGeom, slab_bytes: usize) -> usize {
    let plane = g.cin.saturating_mul(g.hin).saturating_mul(g.win).saturating_mul(4);
    let fit = (slab_bytes / plane.max(1)).saturating_sub(2 * g.pad).max(1);
    fit.min(g.out_dims()[0])
}

/// Floats of the workspaces the graphs' convolutions need on the CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvWorkspaces {
    /// Normalised (or staged) input planes of one slab.
    pub norm: usize,
    /// One thread's pack buffer (direct) or Winograd blocks.
    pub pack_per_thread: usize,
    /// One im2col matrix shared by all threads (`conv::shared_pack_len`).
    pub shared: usize,
}

impl ConvWorkspaces {
    /// What the convolutions of `graphs` need with slabs of `slab_bytes` in conv mode `mode`.
    pub fn of(graphs: &[&Graph], slab_bytes: usize, mode: winograd::ConvMode) -> Result<ConvWorkspaces, RuntimeError> {
        let mut ws = ConvWorkspaces { pack_per_thread: conv::pack_len(), ..ConvWorkspaces::default() };
        for op in graphs.iter().flat_map(|g| &g.ops) {
            let Op::Conv { g: geom, norm, .. } = *op else { continue };
            if norm.is_some() || op.in_place() {
                let planes = (slab_planes(&geom, slab_bytes) + 2 * geom.pad).min(geom.din);
                let len = [geom.cin, planes, geom.hin, geom.win]
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or(RuntimeError::Overflow("norm workspace"))?;
                ws.norm = ws.norm.max(len);
            }
            if runs_winograd(&geom, mode) {
                ws.pack_per_thread = ws.pack_per_thread.max(winograd::thread_ws_len(&geom));
            }
            ws.shared = ws.shared.max(conv::shared_pack_len(&geom));
        }
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(cin: usize, d: usize, hw: usize, k: usize) -> ConvGeom {
        ConvGeom { cin, din: d, hin: hw, win: hw, up: 0, k, stride: 1, pad: k / 2, cout: 8 }
    }

    #[test]
    fn slabs_keep_the_input_planes_within_the_budget() {
        let g = geom(4, 64, 16, 3);
        let plane = 4 * 16 * 16 * 4;
        for budget in [plane, 3 * plane, 10 * plane, 1000 * plane] {
            let s = slab_planes(&g, budget);
            assert!((1..=64).contains(&s));
            if s > 1 {
                assert!((s + 2) * plane <= budget, "{s} planes over {budget} bytes");
            }
        }
        assert_eq!(slab_planes(&g, usize::MAX), 64);
    }
}
