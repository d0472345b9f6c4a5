//! Similarity kernels and vector encodings: the inner product of f32 vectors, of an f32 query
//! with f16-stored vectors, and of two i8-coded vectors; the f16 and i8 encodings themselves.
//!
//! Every kernel is written once, portably, in lanes the compiler vectorises, and compiled twice:
//! as is, and inside a function built for AVX2/FMA that runs only after the CPU is seen to have
//! both (twice the speed of the SSE2 baseline). Those dispatchers are this module's only unsafe
//! calls. The vector index keeps its graphs in these encodings; the model's zero-shot,
//! matching and similarity matrices use `dot`.

/// Lanes of the portable kernels: enough independent sums for two AVX registers (or four SSE
/// ones); one running sum would keep the compiler from reordering, so from vectorising.
const LANES: usize = 16;

/// Which instruction set the kernels run on here.
pub fn isa() -> &'static str {
    if has_avx2_fma() {
        "avx2+fma"
    } else {
        "portable"
    }
}

#[inline]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Compiles `$portable` (an `#[inline(always)]` kernel) a second time for AVX2/FMA, and calls
/// that copy when the CPU has both.
macro_rules! dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $portable:ident) => {
        $(#[$doc])*
        // Inline: the hot loops of the vector index call these, and must get them compiled at
        // that crate's optimisation level, not this one's.
        #[inline]
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[inline]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $portable($($arg),*, true)
                }
                if has_avx2_fma() {
                    // SAFETY: the CPU supports both features, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*, false)
        }
    };
}

dispatch! {
    /// Inner product of two equally long f32 slices.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_lanes
}

dispatch! {
    /// Inner product of an f32 query with a vector stored by [`encode_f16`].
    pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 => dot_f16_lanes
}

dispatch! {
    /// Inner product of two i8 codes (scale them by both vectors' [`encode_i8`] scales).
    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 => dot_i8_lanes
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32], fma: bool) -> f32 {
    widened_dot_lanes(a, b, fma, |y| y)
}

#[inline(always)]
fn dot_f16_lanes(a: &[f32], b: &[u16], fma: bool) -> f32 {
    widened_dot_lanes(a, b, fma, f16_to_f32)
}

/// The f32 lane kernel, with `b`'s elements widened to f32 by `widen` as they are read (the
/// identity for f32 rows; inlined, so each element type compiles to its own loop).
#[inline(always)]
fn widened_dot_lanes<B: Copy>(a: &[f32], b: &[B], fma: bool, widen: impl Fn(B) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, &y)| x * widen(y))
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            let y = widen(cb[i]);
            acc[i] = if fma {
                ca[i].mul_add(y, acc[i])
            } else {
                acc[i] + ca[i] * y
            };
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot_i8_lanes(a: &[i8], b: &[i8], _fma: bool) -> i32 {
    // 32 lanes of i16 products summed pairwise into i32: what `vpmaddwd` does.
    let mut acc = [0i32; 2 * LANES];
    let chunks_a = a.chunks_exact(2 * LANES);
    let chunks_b = b.chunks_exact(2 * LANES);
    let tail: i32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..2 * LANES {
            acc[i] += i32::from(i16::from(ca[i]) * i16::from(cb[i]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Smallest normal f16 magnitude; smaller components are stored as zero, which keeps
/// subnormals (and the CPU's slow path for them) out of the f32 conversion.
const F16_MIN_NORMAL: f32 = 6.103_515_6e-5;

/// IEEE half-precision bits of `x`, rounded to nearest; tiny magnitudes flush to zero. Unit
/// vectors never come near the f16 range limit.
#[inline]
pub fn encode_f16(x: f32) -> u16 {
    if x.abs() < F16_MIN_NORMAL || !x.is_finite() {
        return if x.is_sign_negative() { 0x8000 } else { 0 };
    }
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exp >= 0x1f {
        return sign | 0x7bff; // the largest finite f16
    }
    let mantissa = bits & 0x7f_ffff;
    // Round to nearest, ties to even, on the 13 dropped bits; a carry into the exponent is
    // exactly the rounded value.
    let half = mantissa >> 13;
    let rest = mantissa & 0x1fff;
    let mut h = ((exp as u32) << 10) | half;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        h += 1;
    }
    sign | h.min(0x7bff) as u16
}

/// The f32 value of normal (or zero) f16 bits: the exponent rebiased by one multiply, no branch.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    // 2^112 moves the f16 exponent bias (15) to f32's (127).
    let magnitude = f32::from_bits(u32::from(h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(magnitude.to_bits() | sign)
}

/// Codes `v` as i8 with one scale per vector (the largest magnitude maps to ±127), so
/// `dot(a, b) ≈ scale_a · scale_b · dot_i8(codes_a, codes_b)`; writes the codes into `out`.
#[inline]
pub fn encode_i8(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        let b = (0..n).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
        (a, b)
    }

    fn plain(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum()
    }

    #[test]
    fn every_kernel_matches_the_plain_sum_at_every_length() {
        for n in [0, 1, 7, 16, 17, 33, 64, 100, 384] {
            let (a, b) = pair(n);
            let want = plain(&a, &b);
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-5, "f32 n {n}");
            assert!(
                (dot_lanes(&a, &b, false) as f64 - want).abs() < 1e-5,
                "n {n}"
            );

            let halves: Vec<u16> = b.iter().map(|&x| encode_f16(x)).collect();
            assert!(
                (dot_f16(&a, &halves) as f64 - want).abs() < 1e-3,
                "f16 n {n}"
            );
            let portable = dot_f16_lanes(&a, &halves, false);
            assert!((dot_f16(&a, &halves) - portable).abs() < 1e-6, "n {n}");

            let (mut qa, mut qb) = (vec![0i8; n], vec![0i8; n]);
            let (sa, sb) = (encode_i8(&a, &mut qa), encode_i8(&b, &mut qb));
            let approx = (sa * sb) as f64 * dot_i8(&qa, &qb) as f64;
            assert!(
                (approx - want).abs() < 2e-3 * (n as f64).sqrt().max(1.0),
                "i8 n {n}"
            );
            assert_eq!(dot_i8(&qa, &qb), dot_i8_lanes(&qa, &qb, false));
        }
    }

    #[test]
    fn f16_round_trips_within_half_an_ulp_and_flushes_tiny_values() {
        for x in [
            1.0f32, -1.0, 0.5, 0.333_333, -0.072_1, 0.000_123, 65504.0, 1e-3,
        ] {
            let back = f16_to_f32(encode_f16(x));
            assert!(
                (back - x).abs() <= x.abs() * (1.0 / 2048.0),
                "{x} -> {back}"
            );
        }
        assert_eq!(f16_to_f32(encode_f16(3e-5)), 0.0);
        assert_eq!(f16_to_f32(encode_f16(0.0)), 0.0);
        assert_eq!(encode_f16(1.0), 0x3c00);
        assert_eq!(encode_f16(-2.0), 0xc000);
        // 1 + 2^-11 is a tie: rounds to even (1.0); just above it rounds up.
        assert_eq!(encode_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(encode_f16(1.0 + 1.5 / 2048.0), 0x3c01);
    }

    #[test]
    fn i8_codes_span_the_range_and_zero_vectors_stay_zero() {
        let mut out = [0i8; 3];
        let scale = encode_i8(&[0.5, -0.25, 0.0], &mut out);
        assert_eq!(out, [127, -64, 0]);
        assert!((scale - 0.5 / 127.0).abs() < 1e-9);
        assert_eq!(encode_i8(&[0.0, 0.0, 0.0], &mut out), 0.0);
        assert_eq!(out, [0, 0, 0]);
    }
}
