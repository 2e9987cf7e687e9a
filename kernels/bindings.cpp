// ibpo_fast._native: a thin nanobind layer over the row kernels. Tensors arrive zero-copy through DLPack
// (torch, numpy); every shape, dtype, device and stride is checked here, so a tile the kernels would misread
// raises ValueError instead (nothing is ever copied or converted: an in-place result must land in the caller's
// buffer). The GIL is released while a kernel runs.
#include <cstdint>
#include <string>
#include <type_traits>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "row_kernels.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Array = nb::ndarray<>;
const nb::dlpack::dtype kBf16{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};

[[noreturn]] void fail(const char* name, const std::string& message) {
  throw nb::value_error((std::string(name) + ": " + message).c_str());
}

void check_cpu(const Array& a, const char* name) {
  if (a.device_type() != nb::device::cpu::value) fail(name, "must be a CPU tensor");
}

bool is_bf16(const Array& z) { return z.dtype() == kBf16; }

ibpo::Tile check_tile(const Array& z) {
  check_cpu(z, "z");
  if (z.ndim() != 2) fail("z", "must be a 2-D logits tile [rows, cols]");
  if (z.dtype() != nb::dtype<float>() && !is_bf16(z)) fail("z", "must be float32 or bfloat16");
  const std::int64_t rows = z.shape(0), cols = z.shape(1);
  if (cols > 1 && z.stride(1) != 1) fail("z", "must have unit column stride (rows may be strided)");
  if (rows > 1 && z.stride(0) < cols) fail("z", "rows overlap or run backwards (row stride < cols)");
  return {rows, cols, rows > 1 ? z.stride(0) : cols};
}

// One value per row: 1-D, length rows, the exact dtype T; any stride (a zero stride only for inputs).
template <class T>
ibpo::RowVector<T> row_vector(const Array& a, std::int64_t rows, const char* name, const char* dtype_name) {
  check_cpu(a, name);
  if (a.ndim() != 1 || static_cast<std::int64_t>(a.shape(0)) != rows)
    fail(name, "must be 1-D with one value per row of z (" + std::to_string(rows) + ")");
  if (a.dtype() != nb::dtype<std::remove_const_t<T>>()) fail(name, std::string("must be ") + dtype_name);
  if (!std::is_const_v<T> && rows > 1 && a.stride(0) == 0) fail(name, "is written per row: stride 0 not allowed");
  return {static_cast<T*>(a.data()), rows > 0 ? a.stride(0) : 1};
}

using Targets = ibpo::RowVector<const std::int64_t>;

Targets targets_of(const Array& t, std::int64_t rows) {
  return row_vector<const std::int64_t>(t, rows, "targets", "int64");
}

void online_logsumexp(Array z, Array targets, Array running_max, Array running_sum, Array target_logit, int threads) {
  const ibpo::Tile tile = check_tile(z);
  const Targets t = targets_of(targets, tile.rows);
  const auto m = row_vector<float>(running_max, tile.rows, "running_max", "float32");
  const auto s = row_vector<float>(running_sum, tile.rows, "running_sum", "float32");
  const auto g = row_vector<float>(target_logit, tile.rows, "target_logit", "float32");
  nb::gil_scoped_release release;
  if (is_bf16(z))
    ibpo::online_logsumexp(static_cast<const ibpo::bf16*>(z.data()), tile, t, m, s, g, threads);
  else
    ibpo::online_logsumexp(static_cast<const float*>(z.data()), tile, t, m, s, g, threads);
}

void softmax_grad(Array z, Array targets, Array lse, Array row_scale, int threads) {
  const ibpo::Tile tile = check_tile(z);
  const Targets t = targets_of(targets, tile.rows);
  const auto l = row_vector<const float>(lse, tile.rows, "lse", "float32");
  const auto c = row_vector<const float>(row_scale, tile.rows, "row_scale", "float32");
  nb::gil_scoped_release release;
  if (is_bf16(z))
    ibpo::softmax_grad(static_cast<ibpo::bf16*>(z.data()), tile, t, l, c, threads);
  else
    ibpo::softmax_grad(static_cast<float*>(z.data()), tile, t, l, c, threads);
}

void logsumexp_and_grad(Array z, Array targets, Array row_scale, Array logp, int threads) {
  const ibpo::Tile tile = check_tile(z);
  const Targets t = targets_of(targets, tile.rows);
  const auto c = row_vector<const float>(row_scale, tile.rows, "row_scale", "float32");
  const auto out = row_vector<float>(logp, tile.rows, "logp", "float32");
  nb::gil_scoped_release release;
  if (is_bf16(z))
    ibpo::logsumexp_and_grad(static_cast<ibpo::bf16*>(z.data()), tile, t, c, out, threads);
  else
    ibpo::logsumexp_and_grad(static_cast<float*>(z.data()), tile, t, c, out, threads);
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Fused row kernels over logits tiles for the native CPU backend (see kernels/row_kernels.h).";
  m.def("online_logsumexp_", &online_logsumexp, "z"_a.noconvert(), "local_targets"_a.noconvert(),
        "running_max"_a.noconvert(), "running_sum"_a.noconvert(), "target_logit"_a.noconvert(), "num_threads"_a = 0,
        "Update the online log-sum-exp state (running_max, running_sum, target_logit) with tile z.");
  m.def("softmax_grad_", &softmax_grad, "z"_a.noconvert(), "local_targets"_a.noconvert(), "lse"_a.noconvert(),
        "row_scale"_a.noconvert(), "num_threads"_a = 0,
        "z <- row_scale * (onehot(target) - exp(z - lse)), in place.");
  m.def("logsumexp_and_grad_", &logsumexp_and_grad, "z"_a.noconvert(), "targets"_a.noconvert(),
        "row_scale"_a.noconvert(), "logp"_a.noconvert(), "num_threads"_a = 0,
        "Whole-vocabulary tile: logp <- z[target] - logsumexp(z); z <- its gradient times row_scale, in place.");
}
