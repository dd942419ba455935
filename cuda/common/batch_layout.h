// Leading batch dimensions of an FFI call: many scenes in one launch.
//
// The Python side calls the targets with vmap_method="expand_dims": under
// `jax.vmap` (nested any number of times, up to kMaxBatchDims) every buffer
// gains the same number of leading dimensions, each either the full batch
// size or 1 when that buffer is not mapped along it (e.g. an atlas shared by
// all scenes). Results always carry the full batch dimensions. Scene `b`
// (row-major over the result's batch dimensions) reads each argument at
// offset batch_offset(stride, batch_index(layout, b)): a size-1 dimension has stride 0, so
// shared arguments are read in place, never copied per scene.
#pragma once

#include <cstdint>

#include "render_common.h"

namespace diffbmp {

constexpr int kMaxBatchDims = 4;

// The batch dimensions of the results: `count` scenes in all.
struct BatchLayout {
  int rank;
  int64_t dims[kMaxBatchDims];
  int64_t count;
};

// Element offset of one scene per batch dimension of an argument; 0 where the
// argument has size 1 along that dimension (shared by all scenes).
struct BatchStride {
  int64_t s[kMaxBatchDims];
};

// Scene b's position along each batch dimension (row-major over L.dims; 0
// beyond L.rank). The outermost position is what the divisions leave, so
// the usual single vmap divides nothing: the kernels compute this once per
// thread and every argument's offset from it with multiply-adds only (the
// per-argument 64-bit divisions were 9 % of the forward's instructions).
struct BatchIndex {
  int64_t i[kMaxBatchDims];
};

DB_HD BatchIndex batch_index(const BatchLayout& L, int64_t b) {
  BatchIndex x;
  // Constant indices only (unrolled, each dimension tested against the rank):
  // a loop up to L.rank would index x.i at run time and put it in local memory.
  DB_UNROLL
  for (int j = kMaxBatchDims - 1; j > 0; --j) {
    x.i[j] = 0;
    if (j < L.rank) {
      x.i[j] = b % L.dims[j];
      b /= L.dims[j];
    }
  }
  x.i[0] = L.rank > 0 ? b : 0;
  return x;
}

DB_HD int64_t batch_offset(const BatchStride& st, const BatchIndex& x) {
  int64_t off = 0;
  DB_UNROLL
  for (int j = 0; j < kMaxBatchDims; ++j) off += x.i[j] * st.s[j];
  return off;
}

}  // namespace diffbmp
