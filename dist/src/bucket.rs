//! Gradient buckets: a flat gradient (one buffer, tensors back to back in parameter order, as
//! the trainer's `ParamStore`) is cut into tensor-aligned ranges of about `cap_bytes`, starting
//! from the LAST tensor, because the backward pass produces gradients from the output layer back
//! to the input. During a step a [`BucketSchedule`] is told how far down the gradient is final
//! ("bucket ready") and hands each bucket that became complete to the reduction once, in plan
//! order, so the communication of early buckets can overlap the rest of the backward pass. Every
//! rank builds the same plan from the same tensor table, so all reduce the same buckets in the
//! same order.

use std::ops::Range;

use crate::DistError;

/// The buckets of one flat gradient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    /// In reduction order: the first covers the last tensors.
    buckets: Vec<Range<usize>>,
    len: usize,
}

impl BucketPlan {
    /// Plans buckets for tensors given as consecutive ranges covering `0..len` in parameter order.
    /// A bucket closes once it holds at least `cap_bytes` (a larger tensor is a bucket of its own).
    pub fn new(tensors: &[Range<usize>], cap_bytes: usize) -> Result<Self, DistError> {
        let mut end = 0;
        for (i, t) in tensors.iter().enumerate() {
            if t.start != end || t.end < t.start {
                return Err(DistError::Invalid(format!(
                    "tensor {i} covers {}..{}, the previous ended at {end}: tensors must be consecutive",
                    t.start, t.end
                )));
            }
            end = t.end;
        }
        let cap = cap_bytes.max(4) / 4;
        let mut buckets = Vec::new();
        let mut hi = end;
        for t in tensors.iter().rev() {
            if hi - t.start >= cap {
                buckets.push(t.start..hi);
                hi = t.start;
            }
        }
        if hi > 0 {
            buckets.push(0..hi);
        }
        Ok(BucketPlan { buckets, len: end })
    }

    /// The ranges, in reduction order (last parameters first).
    pub fn buckets(&self) -> &[Range<usize>] {
        &self.buckets
    }

    /// Length of the flat gradient the plan covers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One step's walk through a plan.
#[derive(Debug)]
pub struct BucketSchedule<'p> {
    plan: &'p BucketPlan,
    next: usize,
}

impl<'p> BucketSchedule<'p> {
    pub fn new(plan: &'p BucketPlan) -> Self {
        BucketSchedule { plan, next: 0 }
    }

    /// The backward reports that every gradient at `offset..` is final: `reduce(i, bucket)` runs
    /// for each bucket `i` that became complete, in plan order.
    pub fn ready_from(
        &mut self,
        offset: usize,
        grad: &mut [f32],
        mut reduce: impl FnMut(usize, &mut [f32]) -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        if grad.len() != self.plan.len {
            return Err(DistError::Invalid(format!(
                "gradient has {} values, the bucket plan covers {}",
                grad.len(),
                self.plan.len
            )));
        }
        while let Some(b) = self.plan.buckets.get(self.next) {
            if b.start < offset {
                break;
            }
            reduce(self.next, &mut grad[b.clone()])?;
            self.next += 1;
        }
        Ok(())
    }

    /// The backward finished: every remaining bucket is reduced.
    pub fn finish(
        mut self,
        grad: &mut [f32],
        reduce: impl FnMut(usize, &mut [f32]) -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        self.ready_from(0, grad, reduce)
    }

    /// Buckets handed over so far.
    pub fn done(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(lens: &[usize]) -> Vec<Range<usize>> {
        let mut o = 0;
        lens.iter()
            .map(|&l| {
                o += l;
                o - l..o
            })
            .collect()
    }

    #[test]
    fn buckets_run_backwards_are_tensor_aligned_and_cover_everything() {
        // Tensors of 10, 3, 40, 5, 5 values; 8 values (32 bytes) per bucket.
        let p = BucketPlan::new(&ranges(&[10, 3, 40, 5, 5]), 32).unwrap();
        assert_eq!(p.buckets(), &[53..63, 13..53, 0..13]);
        assert_eq!(p.len(), 63);
        // One huge bucket: everything at once.
        assert_eq!(
            BucketPlan::new(&ranges(&[10, 3]), 1 << 30)
                .unwrap()
                .buckets(),
            &[Range { start: 0, end: 13 }]
        );
        // Tiny cap: one tensor per bucket, last first.
        assert_eq!(
            BucketPlan::new(&ranges(&[2, 3]), 1).unwrap().buckets(),
            &[2..5, 0..2]
        );
        assert!(BucketPlan::new(&[], 32).unwrap().buckets().is_empty());
        let e = BucketPlan::new(&[0..4, 5..6], 32).unwrap_err().to_string();
        assert!(e.contains("consecutive"), "{e}");
    }

    #[test]
    fn schedule_hands_each_bucket_over_once_when_ready() {
        let p = BucketPlan::new(&ranges(&[10, 3, 40, 5, 5]), 32).unwrap();
        let mut g: Vec<f32> = (0..63).map(|i| i as f32).collect();
        let mut s = BucketSchedule::new(&p);
        let mut seen = Vec::new();
        let mut log = |i: usize, b: &mut [f32]| {
            seen.push((i, b[0] as usize, b.len()));
            b.iter_mut().for_each(|v| *v = -*v);
            Ok(())
        };
        s.ready_from(58, &mut g, &mut log).unwrap(); // last tensor only: no bucket complete
        s.ready_from(53, &mut g, &mut log).unwrap(); // first bucket
        s.ready_from(13, &mut g, &mut log).unwrap(); // second
        assert_eq!(s.done(), 2);
        s.finish(&mut g, &mut log).unwrap();
        assert_eq!(seen, vec![(0, 53, 10), (1, 13, 40), (2, 0, 13)]);
        assert!(
            g.iter().enumerate().all(|(i, &v)| v == -(i as f32)),
            "each value reduced exactly once"
        );
        let mut short = vec![0.0; 5];
        assert!(BucketSchedule::new(&p)
            .finish(&mut short, |_, _| Ok(()))
            .is_err());
    }
}
