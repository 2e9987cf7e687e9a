// Row kernels over one logits tile z [rows, cols] (row stride ld, unit column stride): the elementwise
// work between the matmuls of the chunked backends (ibpo_fast/ops/reference.py).
//
// Every kernel parallelises over rows with OpenMP (num_threads > 0 caps the team; 0 = OpenMP default) and
// computes in f32; Scalar is float or bf16 (converted on load). Vectors of one value per row take a stride.
// A row's target is local to the tile: outside [0, cols) means "not in this tile" (no one-hot there).
#pragma once

#include <cstdint>

#include "numerics.h"

namespace ibpo {

struct Tile {
  std::int64_t rows, cols, ld;  // ld: elements between consecutive rows
};

template <class T>
struct RowVector {  // one value per row, at data[r * stride]
  T* data;
  std::int64_t stride;
  T& operator[](std::int64_t r) const { return data[r * stride]; }
};

// running_max, running_sum, target_logit <- the online log-sum-exp state updated with this tile; z untouched.
template <class Scalar>
void online_logsumexp(const Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<float> running_max,
                      RowVector<float> running_sum, RowVector<float> target_logit, int num_threads);

// z <- row_scale * (onehot(target) - exp(z - lse)): d(row_scale * logp) / dz, in place. Rows with
// row_scale == 0 are written as zeros without evaluating exp.
template <class Scalar>
void softmax_grad(Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<const float> lse,
                  RowVector<const float> row_scale, int num_threads);

// The whole vocabulary in one tile: logp[r] = z[r, target] - logsumexp(z[r]) and z <- the gradient of
// row_scale * logp, both per row while the row is in cache. A row with target -100 (masked) gets logp 0 and
// a zero gradient row.
template <class Scalar>
void logsumexp_and_grad(Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<const float> row_scale,
                        RowVector<float> logp, int num_threads);

}  // namespace ibpo
