//! Eight point decompressions at once: the exponentiation at the heart of `CompressedEdwardsY::decompress`
//! (`(u v^7)^((p-5)/8)`, 254 squarings and 11 multiplications) runs on two vectors of four field elements with the
//! IFMA field arithmetic of this backend; the few multiplications around it run one lane at a time
//! (`FieldElement::sqrt_ratio_i_x8`). Results are those of `decompress` on each input. Added for CAS
//! (../../../../CAS-PATCH.md).

use super::field::{F51x4Reduced, F51x4Unreduced};
use crate::backend::serial::u64::field::FieldElement51;
use curve25519_dalek_derive::unsafe_target_feature;

/// Two vectors of four side by side, so that one's multiplications fill the other's latency.
type Pair = [F51x4Reduced; 2];

#[unsafe_target_feature("avx512ifma,avx512vl")]
#[inline]
fn pow2k(x: Pair, k: u32) -> Pair {
    let [mut a, mut b] = x;
    for _ in 0..k {
        a = F51x4Reduced::from(a.square());
        b = F51x4Reduced::from(b.square());
    }
    [a, b]
}

#[unsafe_target_feature("avx512ifma,avx512vl")]
#[inline]
fn mul(x: &Pair, y: &Pair) -> Pair {
    [F51x4Reduced::from(&x[0] * &y[0]), F51x4Reduced::from(&x[1] * &y[1])]
}

/// `x^((p-5)/8)` of eight field elements: the addition chain of `FieldElement::pow_p58`.
#[unsafe_target_feature("avx512ifma,avx512vl")]
pub(crate) fn pow_p58_x8(x: &[FieldElement51; 8]) -> [FieldElement51; 8] {
    let x: Pair = [
        F51x4Reduced::from(F51x4Unreduced::new(&x[0], &x[1], &x[2], &x[3])),
        F51x4Reduced::from(F51x4Unreduced::new(&x[4], &x[5], &x[6], &x[7])),
    ];
    let t0 = pow2k(x, 1);
    let t1 = pow2k(t0, 2);
    let t2 = mul(&x, &t1);
    let t3 = mul(&t0, &t2);
    let t4 = pow2k(t3, 1);
    let t5 = mul(&t2, &t4);
    let t6 = pow2k(t5, 5);
    let t7 = mul(&t6, &t5);
    let t8 = pow2k(t7, 10);
    let t9 = mul(&t8, &t7);
    let t10 = pow2k(t9, 20);
    let t11 = mul(&t10, &t9);
    let t12 = pow2k(t11, 10);
    let t13 = mul(&t12, &t7);
    let t14 = pow2k(t13, 50);
    let t15 = mul(&t14, &t13);
    let t16 = pow2k(t15, 100);
    let t17 = mul(&t16, &t15);
    let t18 = pow2k(t17, 50);
    let t19 = mul(&t18, &t13);
    let t20 = pow2k(t19, 2);
    let [a, b] = mul(&x, &t20);
    let [a0, a1, a2, a3] = F51x4Unreduced::from(a).split();
    let [b0, b1, b2, b3] = F51x4Unreduced::from(b).split();
    [a0, a1, a2, a3, b0, b1, b2, b3]
}
