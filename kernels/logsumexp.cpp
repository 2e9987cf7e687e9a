// Forward over a logits tile: the online log-sum-exp update (max, sum of exponentials, target logit).
//
// Per row: one read pass for the tile max, then a second pass for the sum of exp(z - max) that finds the row
// in L1/L2 (a 32k-column f32 row is 128 KiB); the running state is rescaled once per row, not per element.
#include <cmath>

#include "row_kernels.h"
#include "row_reduce.h"

namespace ibpo {

template <class Scalar>
void online_logsumexp(const Scalar* z, Tile tile, RowVector<const std::int64_t> targets, RowVector<float> running_max,
                      RowVector<float> running_sum, RowVector<float> target_logit, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(team_size(num_threads)) if (tile.rows > 1)
  for (std::int64_t r = 0; r < tile.rows; ++r) {
    const Scalar* row = z + r * tile.ld;
    const float tile_max = row_max(row, tile.cols);
    const double tile_sum = tile_max == -INFINITY ? 0.0 : row_sum_exp(row, tile.cols, tile_max);
    const float old_max = running_max[r];
    const float new_max = std::fmax(old_max, tile_max);
    // exp(-inf - finite) = 0 handles the first tile; an all -inf tile leaves the state as it was
    const double old_part = old_max == new_max ? running_sum[r] : running_sum[r] * std::exp(double(old_max) - new_max);
    const double new_part = tile_max == new_max ? tile_sum : tile_sum * std::exp(double(tile_max) - new_max);
    running_sum[r] = float(old_part + new_part);
    running_max[r] = new_max;
    if (in_tile(targets[r], tile.cols)) target_logit[r] += to_f32(row[targets[r]]);
  }
}

template void online_logsumexp<float>(const float*, Tile, RowVector<const std::int64_t>, RowVector<float>,
                                      RowVector<float>, RowVector<float>, int);
template void online_logsumexp<bf16>(const bf16*, Tile, RowVector<const std::int64_t>, RowVector<float>,
                                     RowVector<float>, RowVector<float>, int);

}  // namespace ibpo
