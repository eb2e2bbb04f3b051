//! Fully connected layer on row-major `[rows, in]` data: `y = x W^T + b`, W `[out, in]`.

use super::gemm::{gemm_nn, gemm_nt, gemm_tn};
use super::{check_len, LayerError};
use crate::params::{Param, ParamError, ParamStore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    pub fin: usize,
    pub fout: usize,
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// Registers `{prefix}.weight` `[fout, fin]` and `{prefix}.bias` `[fout]`.
    pub fn new(store: &mut ParamStore, prefix: &str, fin: usize, fout: usize, bias: bool) -> Result<Self, ParamError> {
        let weight = store.add(&format!("{prefix}.weight"), &[fout, fin])?;
        let bias = if bias { Some(store.add(&format!("{prefix}.bias"), &[fout])?) } else { None };
        Ok(Linear { fin, fout, weight, bias })
    }

    pub fn forward(&self, p: &[f32], x: &[f32], rows: usize) -> Result<Vec<f32>, LayerError> {
        check_len("linear", "input", x.len(), rows * self.fin)?;
        let mut y = vec![0.0f32; rows * self.fout];
        gemm_nt(rows, self.fin, self.fout, x, self.weight.of(p), 0.0, &mut y);
        if let Some(b) = self.bias {
            let b = b.of(p);
            for r in y.chunks_mut(self.fout) {
                r.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
            }
        }
        Ok(y)
    }

    pub fn backward(&self, p: &[f32], g: &mut [f32], x: &[f32], rows: usize, dy: &[f32]) -> Result<Vec<f32>, LayerError> {
        check_len("linear", "input", x.len(), rows * self.fin)?;
        check_len("linear", "output gradient", dy.len(), rows * self.fout)?;
        // dW [out, in] += dy^T [out, rows] * x [rows, in]
        gemm_tn(self.fout, rows, self.fin, dy, x, 1.0, self.weight.of_mut(g));
        if let Some(b) = self.bias {
            let gb = b.of_mut(g);
            for (o, gbv) in gb.iter_mut().enumerate() {
                *gbv += (0..rows).map(|r| dy[r * self.fout + o] as f64).sum::<f64>() as f32;
            }
        }
        let mut dx = vec![0.0f32; rows * self.fin];
        gemm_nn(rows, self.fout, self.fin, dy, self.weight.of(p), 0.0, &mut dx);
        Ok(dx)
    }
}
