//! Ops with a CPU kernel and backward pass of their own for fine-tuning
//! backbones in candle: depthwise 2-d convolution ([`DepthwiseGeometry`])
//! and clamping to scalar bounds ([`Clamp`]: ReLU, ReLU6, Min/Max/Clip with
//! a constant).
//!
//! Built from candle's generic ops, a k×k depthwise convolution is k² strided
//! views, products and sums over the whole activation, each a separate
//! single-threaded pass that autograd keeps alive (and whose backward pads
//! every view back to full size). Here the forward pass and both gradients
//! are one loop each over the channel planes, spread over the cores with
//! rayon, and autograd keeps only the input and the kernel. Padding is
//! implicit (zeros), so asymmetric pads need no padded copy.
//!
//! On other devices (CUDA) the same ops are composed from candle's generic
//! ops instead ([`OpPath::Portable`]): each of those is one kernel launch
//! over the whole tensor there, and candle differentiates them itself.
//! `apply` picks the path from the tensor's device.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Which implementation an op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// The threaded CPU kernels of this module (CPU tensors only).
    CpuKernel,
    /// candle's generic ops: any device, differentiated by candle.
    Portable,
}

impl OpPath {
    /// The path for tensors on `device`: the CPU kernels on the CPU,
    /// generic ops elsewhere.
    pub fn for_device(device: &candle_core::Device) -> Self {
        if device.is_cpu() {
            Self::CpuKernel
        } else {
            Self::Portable
        }
    }
}

/// The view `x[:, :, ky + s·i, kx + s·j]` for `i < oh`, `j < ow` of a padded
/// NCHW tensor with at least `ky + s·oh` rows and `kx + s·ow` columns.
pub fn strided_view(
    x: &Tensor,
    ky: usize,
    kx: usize,
    s: usize,
    oh: usize,
    ow: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, _, w) = x.dims4()?;
    if s == 1 {
        return x.narrow(2, ky, oh)?.narrow(3, kx, ow);
    }
    let rows = x
        .narrow(2, ky, s * oh)?
        .reshape((n, c, oh, s, w))?
        .narrow(3, 0, 1)?
        .reshape((n, c, oh, w))?;
    rows.narrow(3, kx, s * ow)?
        .reshape((n, c, oh, ow, s))?
        .narrow(4, 0, 1)?
        .reshape((n, c, oh, ow))
}

/// Geometry of a depthwise convolution: square stride, top/left zero
/// padding and the output size (bottom/right padding follows from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    /// Stride along both axes (> 0).
    pub stride: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

/// Sizes of one call, checked once.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
}

impl DepthwiseGeometry {
    /// `y[n, c] = x[n, c] ⋆ w[c, 0]` for `x: [n, c, h, w]` and
    /// `w: [c, 1, kh, kw]`, differentiable in both, on `path` (the CPU
    /// kernels need CPU tensors).
    pub fn apply_on(self, path: OpPath, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        match path {
            OpPath::CpuKernel => x.contiguous()?.apply_op2(&w.contiguous()?, Forward(self)),
            OpPath::Portable => self.portable(x, w),
        }
    }

    /// Zero-pads, then sums one strided view per tap times its weights.
    fn portable(self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let Dims {
            c,
            h,
            w: wd,
            kh,
            kw,
            ..
        } = self.dims(x.layout(), w.layout())?;
        // `strided_view` reads rows up to k − 1 + s·out (exclusive).
        let s = self.stride;
        let bottom = (kh - 1 + s * self.out_h).saturating_sub(h + self.pad_top);
        let right = (kw - 1 + s * self.out_w).saturating_sub(wd + self.pad_left);
        let xp =
            x.pad_with_zeros(2, self.pad_top, bottom)?
                .pad_with_zeros(3, self.pad_left, right)?;
        let mut acc: Option<Tensor> = None;
        for ky in 0..kh {
            for kx in 0..kw {
                let view = strided_view(&xp, ky, kx, s, self.out_h, self.out_w)?;
                let k = w
                    .narrow(2, ky, 1)?
                    .narrow(3, kx, 1)?
                    .reshape((1, c, 1, 1))?;
                let t = view.broadcast_mul(&k)?;
                acc = Some(match acc {
                    None => t,
                    Some(a) => (a + t)?,
                });
            }
        }
        acc.ok_or_else(|| candle_core::Error::Msg("depthwise conv: empty kernel".into()))
    }

    /// Range of output indices `o < out` whose tap `k` reads an input row in
    /// `0..len`, i.e. `0 <= o·s + k − pad < len`.
    fn valid(&self, k: usize, pad: usize, len: usize, out: usize) -> std::ops::Range<usize> {
        let s = self.stride;
        let lo = if pad > k { (pad - k).div_ceil(s) } else { 0 };
        let hi = if len + pad > k {
            ((len + pad - k - 1) / s + 1).min(out)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// Visits every (tap, output row range, output column range) with the
    /// offset of the input element under output (0, 0) of that tap; the
    /// caller adds `i·s·w + j·s`.
    fn for_each_tap(
        &self,
        d: Dims,
        mut f: impl FnMut(usize, std::ops::Range<usize>, std::ops::Range<usize>, isize),
    ) {
        for ky in 0..d.kh {
            let rows = self.valid(ky, self.pad_top, d.h, self.out_h);
            for kx in 0..d.kw {
                let cols = self.valid(kx, self.pad_left, d.w, self.out_w);
                if rows.is_empty() || cols.is_empty() {
                    continue;
                }
                let base = (ky as isize - self.pad_top as isize) * d.w as isize
                    + (kx as isize - self.pad_left as isize);
                f(ky * d.kw + kx, rows.clone(), cols, base);
            }
        }
    }

    fn dims(&self, x: &Layout, w: &Layout) -> candle_core::Result<Dims> {
        let (n, c, h, wd) = x.shape().dims4()?;
        let (co, one, kh, kw) = w.shape().dims4()?;
        if co != c || one != 1 || kh == 0 || kw == 0 || self.stride == 0 {
            candle_core::bail!(
                "depthwise conv: input {:?}, kernel {:?}, stride {}",
                x.shape(),
                w.shape(),
                self.stride
            );
        }
        let span = |out: usize, k: usize| (out.max(1) - 1) * self.stride + k;
        if span(self.out_h, kh) > h + self.pad_top + kh
            || span(self.out_w, kw) > wd + self.pad_left + kw
        {
            candle_core::bail!("depthwise conv: output larger than the padded input");
        }
        Ok(Dims {
            n,
            c,
            h,
            w: wd,
            kh,
            kw,
        })
    }
}

/// The contiguous f32 data of a custom op's operand.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("depthwise conv: only f32 is supported");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("depthwise conv: operands must be contiguous"),
    }
}

/// `y = x ⋆ w` (op 1: input, op 2: kernel).
struct Forward(DepthwiseGeometry);
/// `∂L/∂x` from `∂L/∂y` (op 1) and the kernel (op 2); op 1's layout gives
/// the output shape, so the input size travels in the struct.
struct GradInput(DepthwiseGeometry, [usize; 4]);
/// `∂L/∂w` from the input (op 1) and `∂L/∂y` (op 2).
struct GradKernel(DepthwiseGeometry, [usize; 2]);

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let d = g.dims(l1, l2)?;
        let (x, k) = (slice(s1, l1)?, slice(s2, l2)?);
        let plane_in = d.h * d.w;
        let plane_out = g.out_h * g.out_w;
        let mut y = vec![0f32; d.n * d.c * plane_out];
        y.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(p, out)| {
                let xin = &x[p * plane_in..(p + 1) * plane_in];
                let kc = &k[(p % d.c) * d.kh * d.kw..];
                g.for_each_tap(d, |t, rows, cols, base| {
                    let wt = kc[t];
                    for i in rows {
                        let row = &mut out[i * g.out_w..(i + 1) * g.out_w];
                        let start = base + (i * g.stride * d.w) as isize;
                        for j in cols.clone() {
                            row[j] += wt * xin[(start + (j * g.stride) as isize) as usize];
                        }
                    }
                });
            });
        Ok((
            CpuStorage::F32(y),
            Shape::from((d.n, d.c, g.out_h, g.out_w)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (n, c, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = grad.apply_op2_no_bwd(w, &GradInput(self.0, [n, c, h, wd]))?;
        let gw = x.apply_op2_no_bwd(&grad, &GradKernel(self.0, [kh, kw]))?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let [n, c, h, w] = self.1;
        let d = g.dims(&Layout::contiguous((n, c, h, w)), l2)?;
        if l1.shape().dims() != [n, c, g.out_h, g.out_w] {
            candle_core::bail!("depthwise conv: gradient of shape {:?}", l1.shape());
        }
        let (gy, k) = (slice(s1, l1)?, slice(s2, l2)?);
        let plane_in = h * w;
        let plane_out = g.out_h * g.out_w;
        let mut gx = vec![0f32; n * c * plane_in];
        gx.par_chunks_mut(plane_in)
            .enumerate()
            .for_each(|(p, gin)| {
                let gout = &gy[p * plane_out..(p + 1) * plane_out];
                let kc = &k[(p % c) * d.kh * d.kw..];
                g.for_each_tap(d, |t, rows, cols, base| {
                    let wt = kc[t];
                    for i in rows {
                        let row = &gout[i * g.out_w..(i + 1) * g.out_w];
                        let start = base + (i * g.stride * w) as isize;
                        for j in cols.clone() {
                            gin[(start + (j * g.stride) as isize) as usize] += wt * row[j];
                        }
                    }
                });
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}

impl CustomOp2 for GradKernel {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let [kh, kw] = self.1;
        let (_, c, _, _) = l1.shape().dims4()?;
        let d = g.dims(l1, &Layout::contiguous((c, 1, kh, kw)))?;
        if l2.shape().dims() != [d.n, d.c, g.out_h, g.out_w] {
            candle_core::bail!("depthwise conv: gradient of shape {:?}", l2.shape());
        }
        let (x, gy) = (slice(s1, l1)?, slice(s2, l2)?);
        let plane_in = d.h * d.w;
        let plane_out = g.out_h * g.out_w;
        let mut gw = vec![0f32; c * kh * kw];
        gw.par_chunks_mut(kh * kw).enumerate().for_each(|(ch, gk)| {
            for b in 0..d.n {
                let p = b * c + ch;
                let xin = &x[p * plane_in..(p + 1) * plane_in];
                let gout = &gy[p * plane_out..(p + 1) * plane_out];
                g.for_each_tap(d, |t, rows, cols, base| {
                    let mut acc = 0f32;
                    for i in rows {
                        let row = &gout[i * g.out_w..(i + 1) * g.out_w];
                        let start = base + (i * g.stride * d.w) as isize;
                        for j in cols.clone() {
                            acc += row[j] * xin[(start + (j * g.stride) as isize) as usize];
                        }
                    }
                    gk[t] += acc;
                });
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((c, 1, kh, kw))))
    }
}

/// `y = min(max(x, lo), hi)` with the gradient passed where the input is
/// inside the bounds (at `lo` too unless `open_low`: ReLU's convention is
/// `x > 0`, a clamp's `lo <= x <= hi`). candle's `maximum`/`minimum` against
/// a broadcast constant spend about ten full passes over the activation in
/// their backward (equality masks of both operands, a gradient for the
/// constant); this is one pass each way, threaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clamp {
    /// Lower bound (`f32::NEG_INFINITY`: none).
    pub lo: f32,
    /// Upper bound (`f32::INFINITY`: none).
    pub hi: f32,
    /// No gradient at exactly `lo` (ReLU).
    pub open_low: bool,
}

/// Elements per parallel chunk of an element-wise pass.
const CHUNK: usize = 1 << 14;

impl Clamp {
    /// ReLU: `max(x, 0)`, gradient where `x > 0`.
    pub const RELU: Clamp = Clamp {
        lo: 0.0,
        hi: f32::INFINITY,
        open_low: true,
    };

    /// Applies the clamp (differentiable in `x`) on `path`. The portable path keeps this
    /// op's gradient exactly (1 inside the bounds, 0 outside, ReLU's open
    /// at 0): the clamped value enters detached and the input through a
    /// 0/1 mask, where candle's own `relu`/`maximum` would pass 1 or ½ at a
    /// tie and so train differently on another device.
    pub fn apply_on(self, path: OpPath, x: &Tensor) -> candle_core::Result<Tensor> {
        if path == OpPath::CpuKernel {
            return x.apply_op1(self);
        }
        let mut clamped = x.detach();
        let mut pass: Option<Tensor> = None;
        let mut and = |m: Tensor| -> candle_core::Result<()> {
            pass = Some(match pass.take() {
                None => m,
                Some(p) => p.mul(&m)?,
            });
            Ok(())
        };
        if self.lo > f32::NEG_INFINITY {
            clamped = clamped.maximum(f64::from(self.lo))?;
            and(if self.open_low {
                x.gt(f64::from(self.lo))?
            } else {
                x.ge(f64::from(self.lo))?
            })?;
        }
        if self.hi < f32::INFINITY {
            clamped = clamped.minimum(f64::from(self.hi))?;
            and(x.le(f64::from(self.hi))?)?;
        }
        let Some(pass) = pass else {
            return Ok(x.clone());
        };
        let pass = pass.to_dtype(x.dtype())?;
        let stop = pass.affine(-1.0, 1.0)?;
        x.mul(&pass)? + clamped.mul(&stop)?
    }

    fn passes(&self, x: f32) -> bool {
        (if self.open_low {
            x > self.lo
        } else {
            x >= self.lo
        }) && x <= self.hi
    }
}

impl CustomOp1 for Clamp {
    fn name(&self) -> &'static str {
        "clamp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x.max(self.lo).min(self.hi);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&grad, &ClampGrad(*self))?))
    }
}

/// `∂L/∂x` of [`Clamp`] from the input (op 1) and `∂L/∂y` (op 2).
struct ClampGrad(Clamp);

impl CustomOp2 for ClampGrad {
    fn name(&self) -> &'static str {
        "clamp-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "clamp: gradient of shape {:?} for {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(gx, (x, g))| {
                for ((gx, &x), &g) in gx.iter_mut().zip(x).zip(g) {
                    *gx = if self.0.passes(x) { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
    }

    /// The same convolution from candle's generic ops: zero-pad, then one
    /// strided view per tap times its kernel weight, summed.
    fn reference(x: &Tensor, w: &Tensor, g: DepthwiseGeometry) -> Tensor {
        let (_, c, h, wd) = x.dims4().unwrap();
        let (_, _, kh, kw) = w.dims4().unwrap();
        let bottom = ((g.out_h - 1) * g.stride + kh).saturating_sub(h + g.pad_top);
        let right = ((g.out_w - 1) * g.stride + kw).saturating_sub(wd + g.pad_left);
        let xp = x
            .pad_with_zeros(2, g.pad_top, bottom + g.stride)
            .unwrap()
            .pad_with_zeros(3, g.pad_left, right + g.stride)
            .unwrap();
        let mut acc: Option<Tensor> = None;
        for ky in 0..kh {
            for kx in 0..kw {
                let mut rows = Vec::new();
                for i in 0..g.out_h {
                    let r = xp.narrow(2, ky + i * g.stride, 1).unwrap();
                    let mut cols = Vec::new();
                    for j in 0..g.out_w {
                        cols.push(r.narrow(3, kx + j * g.stride, 1).unwrap());
                    }
                    rows.push(Tensor::cat(&cols, 3).unwrap());
                }
                let view = Tensor::cat(&rows, 2).unwrap();
                let k = w
                    .narrow(2, ky, 1)
                    .unwrap()
                    .narrow(3, kx, 1)
                    .unwrap()
                    .reshape((1, c, 1, 1))
                    .unwrap();
                let t = view.broadcast_mul(&k).unwrap();
                acc = Some(match acc {
                    None => t,
                    Some(a) => (a + t).unwrap(),
                });
            }
        }
        acc.unwrap()
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn forward_and_gradients_match_candle_ops() {
        // (n, c, h, w, k, stride, pad_top, pad_left, out_h, out_w): same
        // padding, TF-style asymmetric padding at stride 2, no padding,
        // an odd size and a 5x5 kernel.
        let cases = [
            (2, 3, 8, 8, 3, 1, 1, 1, 8, 8),
            (2, 4, 8, 8, 3, 2, 0, 0, 4, 4),
            (1, 2, 9, 7, 3, 2, 1, 1, 5, 4),
            (3, 2, 6, 6, 3, 1, 0, 0, 4, 4),
            (1, 3, 10, 10, 5, 2, 2, 2, 5, 5),
        ];
        for (i, &(n, c, h, w, k, s, pt, pl, oh, ow)) in cases.iter().enumerate() {
            let g = DepthwiseGeometry {
                stride: s,
                pad_top: pt,
                pad_left: pl,
                out_h: oh,
                out_w: ow,
            };
            let dev = Device::Cpu;
            let x = Var::from_vec(seeded(n * c * h * w, i as u64), (n, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(seeded(c * k * k, 100 + i as u64), (c, 1, k, k), &dev).unwrap();
            let up = Tensor::from_vec(
                seeded(n * c * oh * ow, 200 + i as u64),
                (n, c, oh, ow),
                &dev,
            )
            .unwrap();
            for path in [OpPath::CpuKernel, OpPath::Portable] {
                let ours = g.apply_on(path, &x, &wt).unwrap();
                let theirs = reference(&x, &wt, g);
                assert_eq!(ours.dims(), theirs.dims(), "case {i}, {path:?}");
                assert!(
                    max_abs(&ours, &theirs) < 1e-5,
                    "forward, case {i}, {path:?}"
                );
                let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (theirs * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (name, v) in [("input", x.as_tensor()), ("kernel", wt.as_tensor())] {
                    let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                    assert!(max_abs(a, b) < 1e-4, "{name} gradient, case {i}, {path:?}");
                }
            }
        }
    }

    #[test]
    fn clamp_matches_candle_ops_and_their_gradients() {
        let dev = Device::Cpu;
        // Values away from the bounds (candle splits a tie's gradient in two).
        let v: Vec<f32> = seeded(3 * 5 * 7, 9)
            .iter()
            .map(|x| x * 10.0 + 0.01)
            .collect();
        let x = Var::from_vec(v, (3, 5, 7), &dev).unwrap();
        let up = Tensor::from_vec(seeded(3 * 5 * 7, 10), (3, 5, 7), &dev).unwrap();
        let relu6 = Clamp {
            lo: 0.0,
            hi: 6.0,
            open_low: false,
        };
        let cases: [(Clamp, Tensor); 3] = [
            (Clamp::RELU, x.relu().unwrap()),
            (relu6, x.clamp(0f32, 6f32).unwrap()),
            (
                Clamp {
                    lo: f32::NEG_INFINITY,
                    hi: -1.5,
                    open_low: false,
                },
                x.minimum(-1.5f32).unwrap(),
            ),
        ];
        for path in [OpPath::CpuKernel, OpPath::Portable] {
            for (i, (op, theirs)) in cases.iter().enumerate() {
                let ours = op.apply_on(path, &x).unwrap();
                assert_eq!(max_abs(&ours, theirs), 0.0, "forward, case {i}, {path:?}");
                let ga = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (theirs * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let (a, b) = (
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap(),
                );
                assert_eq!(max_abs(a, b), 0.0, "gradient, case {i}, {path:?}");
            }
            // ReLU passes no gradient at 0; a clamp at its bounds does, on
            // both paths (where candle's relu would pass 1 and its
            // maximum ½).
            let z = Var::from_vec(vec![0f32, 1.0, 6.0, 7.0], 4, &dev).unwrap();
            for (op, want) in [
                (Clamp::RELU, [0f32, 1.0, 1.0, 1.0]),
                (relu6, [1.0, 1.0, 1.0, 0.0]),
            ] {
                let y = op.apply_on(path, &z).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                assert_eq!(
                    g.get(z.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
                    want,
                    "{op:?}, {path:?}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &dev).unwrap();
        let g = DepthwiseGeometry {
            stride: 1,
            pad_top: 1,
            pad_left: 1,
            out_h: 8,
            out_w: 8,
        };
        let w4 = Tensor::zeros((4, 1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let w3 = Tensor::zeros((3, 1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let too_big = DepthwiseGeometry { out_h: 40, ..g };
        let no_stride = DepthwiseGeometry { stride: 0, ..g };
        for path in [OpPath::CpuKernel, OpPath::Portable] {
            assert!(g.apply_on(path, &x, &w4).is_err(), "kernel for 4 channels");
            assert!(
                too_big.apply_on(path, &x, &w3).is_err(),
                "output larger than the input"
            );
            assert!(no_stride.apply_on(path, &x, &w3).is_err(), "stride 0");
        }
        let xi = Tensor::zeros((1, 3, 8, 8), candle_core::DType::U32, &dev).unwrap();
        assert!(
            g.apply_on(OpPath::CpuKernel, &xi, &w3).is_err(),
            "integer input"
        );
    }
}
