// Per-row reductions shared by the kernel files: written as `omp simd` reductions so they vectorise without
// -ffast-math (the pragma allows reassociating the max / sum, nothing else).
//
// The sum of exponentials is blocked: f32 SIMD lanes within a block of kSumBlock columns, the block sums added
// in f64. With one f32 accumulator per lane over the whole row, each lane adds cols / lanes terms one after
// another; with real LM logits (a few tokens ~20 above a bulk of thousands) the bulk terms fall below half an
// f32 ulp of the lane that holds the max's 1.0 and are dropped, always downward. Measured on f32 logits at
// V = 128256: relative error of the sum 1.2e-5 (bias -8e-6) against 2.7e-7 for torch's cascade sum, which put
// the native log-probs 3-7x further from the f64 formula than the torch backend's. Blocks bound what a lane
// can drop to its few terms in one block; f64 lanes throughout were exact too but made the row kernels
// 4-8x slower (measured). The block is 64 columns (8 adds per AVX2 lane): with 512 the sum's rounding, the
// same relative error for every exp(z - lse) of a row, still put the gradients 2.0-2.3x further from the
// f64 formula than the torch backend's on an AMD EPYC (AVX2, tests/test_ops_real_vocab.py, V = 49152 and
// 128256); with 64 they are within 1.25x of it or closer, at the same speed (256 x 128256 f32 tile, 2
// threads: logsumexp_and_grad 108 ms, online_logsumexp 91 ms with either block).
#pragma once

#include <cstdint>
#include <limits>

#include <omp.h>

#include "numerics.h"

namespace ibpo {

template <class Scalar>
inline float row_max(const Scalar* z, std::int64_t cols) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (std::int64_t j = 0; j < cols; ++j) {
    const float x = to_f32(z[j]);
    m = x > m ? x : m;
  }
  return m;
}

constexpr std::int64_t kSumBlock = 64;

template <class Scalar>
inline double row_sum_exp(const Scalar* z, std::int64_t cols, float shift) {
  double total = 0.0;
  for (std::int64_t j0 = 0; j0 < cols; j0 += kSumBlock) {
    const std::int64_t j1 = j0 + kSumBlock < cols ? j0 + kSumBlock : cols;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (std::int64_t j = j0; j < j1; ++j) s += exp_f32(to_f32(z[j]) - shift);
    total += s;
  }
  return total;
}

// z <- exp(z - shift) in place -> the sum of the new z, blocked like row_sum_exp.
inline double exp_in_place_and_sum(float* z, std::int64_t cols, float shift) {
  double total = 0.0;
  for (std::int64_t j0 = 0; j0 < cols; j0 += kSumBlock) {
    const std::int64_t j1 = j0 + kSumBlock < cols ? j0 + kSumBlock : cols;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (std::int64_t j = j0; j < j1; ++j) {
      const float e = exp_f32(z[j] - shift);
      z[j] = e;
      s += e;
    }
    total += s;
  }
  return total;
}

inline int team_size(int num_threads) { return num_threads > 0 ? num_threads : omp_get_max_threads(); }

inline bool in_tile(std::int64_t target, std::int64_t cols) { return target >= 0 && target < cols; }

}  // namespace ibpo
