// Backward over a logits tile, in place: z <- row_scale * (onehot(target) - softmax(z)).
//
// softmax_grad takes the final log-sum-exp from a forward pass (vocabulary split over several tiles);
// logsumexp_and_grad is the single-tile path of the weighted loss: max, exp and the gradient per row while
// the row stays in cache, with exp evaluated once per element (stored in z, then scaled) for f32 tiles.
#include <cmath>
#include <cstring>

#include "row_kernels.h"
#include "row_reduce.h"

namespace ibpo {

template <class Scalar>
void softmax_grad(Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<const float> lse,
                  RowVector<const float> row_scale, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(team_size(num_threads)) if (tile.rows > 1)
  for (std::int64_t r = 0; r < tile.rows; ++r) {
    Scalar* row = z + r * tile.ld;
    const float scale = row_scale[r], shift = lse[r];
    if (scale == 0.0f) {
      std::memset(static_cast<void*>(row), 0, sizeof(Scalar) * tile.cols);
      continue;
    }
#pragma omp simd
    for (std::int64_t j = 0; j < tile.cols; ++j) store_f32(row[j], -scale * exp_f32(to_f32(row[j]) - shift));
    if (in_tile(targets[r], tile.cols)) store_f32(row[targets[r]], to_f32(row[targets[r]]) + scale);
  }
}

// logit - (m + log(s)) in f64: the f32 rounding of the log-sum-exp alone (~1e-6 at |lse| ~ 20) would be the
// largest error left once the sum is exact.
static float logp_of(float target_logit, float m, double s) {
  return float(double(target_logit) - (double(m) + std::log(s)));
}

// One row of logsumexp_and_grad -> logp. Stores e = exp(z - max) in place and rescales it: one exp per element.
static float row_logsumexp_and_grad(float* row, std::int64_t cols, std::int64_t target, float scale) {
  const float m = row_max(row, cols);
  const float target_logit = row[target];
  const double s = exp_in_place_and_sum(row, cols, m);
  const float c = float(-scale / s);
#pragma omp simd
  for (std::int64_t j = 0; j < cols; ++j) row[j] *= c;
  row[target] += scale;
  return logp_of(target_logit, m, s);
}

// bf16 rows: a stored bf16 exponential would lose 8 bits, so the gradient pass recomputes exp(z - max) in f32
// and scales it by -scale / s (exp(z - lse) with lse rounded to f32 would add that rounding to every element).
static float row_logsumexp_and_grad(bf16* row, std::int64_t cols, std::int64_t target, float scale) {
  const float m = row_max(row, cols);
  const double s = row_sum_exp(row, cols, m);
  const float logp = logp_of(to_f32(row[target]), m, s);
  const float c = float(-scale / s);
#pragma omp simd
  for (std::int64_t j = 0; j < cols; ++j) store_f32(row[j], c * exp_f32(to_f32(row[j]) - m));
  store_f32(row[target], to_f32(row[target]) + scale);
  return logp;
}

template <class Scalar>
void logsumexp_and_grad(Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<const float> row_scale,
                        RowVector<float> logp, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(team_size(num_threads)) if (tile.rows > 1)
  for (std::int64_t r = 0; r < tile.rows; ++r) {
    Scalar* row = z + r * tile.ld;
    if (!in_tile(targets[r], tile.cols)) {  // -100: a masked row costs one memset
      std::memset(static_cast<void*>(row), 0, sizeof(Scalar) * tile.cols);
      logp[r] = 0.0f;
      continue;
    }
    if (row_scale[r] == 0.0f) {  // weight-0 sequence: the value is still reported, the gradient is zero
      const float m = row_max(row, tile.cols);
      logp[r] = logp_of(to_f32(row[targets[r]]), m, row_sum_exp(row, tile.cols, m));
      std::memset(static_cast<void*>(row), 0, sizeof(Scalar) * tile.cols);
      continue;
    }
    logp[r] = row_logsumexp_and_grad(row, tile.cols, targets[r], row_scale[r]);
  }
}

template void softmax_grad<float>(float*, Tile, RowVector<const std::int64_t>, RowVector<const float>,
                                  RowVector<const float>, int);
template void softmax_grad<bf16>(bf16*, Tile, RowVector<const std::int64_t>, RowVector<const float>,
                                 RowVector<const float>, int);
template void logsumexp_and_grad<float>(float*, Tile, RowVector<const std::int64_t>, RowVector<const float>,
                                        RowVector<float>, int);
template void logsumexp_and_grad<bf16>(bf16*, Tile, RowVector<const std::int64_t>, RowVector<const float>,
                                       RowVector<float>, int);

}  // namespace ibpo
