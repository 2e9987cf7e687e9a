// Scalar helpers shared by the row kernels: bf16 <-> f32 and an exp the compiler can vectorise.
//
// Why our own exp: libm's expf is a call the vectoriser only replaces by a SIMD variant under -ffast-math,
// which would also assume no inf/NaN (and the running max starts at -inf). This is the Cephes expf
// (range reduction by ln 2, degree-6 polynomial, ~1 ulp on [-87, 88]) written without branches, so a
// loop over it becomes straight SIMD code.
#pragma once

#include <cstdint>

namespace ibpo {

struct bf16 {
  std::uint16_t bits;
};

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return __builtin_bit_cast(float, std::uint32_t(x.bits) << 16); }

inline void store_f32(float& dst, float x) { dst = x; }
inline void store_f32(bf16& dst, float x) {
  // round to nearest even; a NaN keeps a quiet NaN pattern
  std::uint32_t u = __builtin_bit_cast(std::uint32_t, x);
  std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  dst.bits = std::uint16_t((u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : rounded);
}

// exp(x) for finite x; 0 below -87 (where f32 would go subnormal), saturates at exp(88).
inline float exp_f32(float x) {
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick: exact without -ffast-math, and n's bits come for free
  const float shifted = clamped * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const std::int32_t ni = __builtin_bit_cast(std::int32_t, shifted) - 0x4B400000;
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln2 in two parts (Cody-Waite)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (ni + 127) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}

}  // namespace ibpo
