// Per-row reductions shared by the kernel files: written as `omp simd` reductions so they vectorise without
// -ffast-math (the pragma allows reassociating the max / sum, nothing else).
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

template <class Scalar>
inline float row_sum_exp(const Scalar* z, std::int64_t cols, float shift) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (std::int64_t j = 0; j < cols; ++j) s += exp_f32(to_f32(z[j]) - shift);
  return s;
}

inline int team_size(int num_threads) { return num_threads > 0 ? num_threads : omp_get_max_threads(); }

inline bool in_tile(std::int64_t target, std::int64_t cols) { return target >= 0 && target < cols; }

}  // namespace ibpo
