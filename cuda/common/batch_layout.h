// Leading batch dimensions of an FFI call: many scenes in one launch.
//
// The Python side calls the targets with vmap_method="expand_dims": under
// `jax.vmap` (nested any number of times, up to kMaxBatchDims) every buffer
// gains the same number of leading dimensions, each either the full batch
// size or 1 when that buffer is not mapped along it (e.g. an atlas shared by
// all scenes). Results always carry the full batch dimensions. Scene `b`
// (row-major over the result's batch dimensions) reads each argument at
// offset batch_offset(layout, stride, b): a size-1 dimension has stride 0, so
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

DB_HD int64_t batch_offset(const BatchLayout& L, const BatchStride& st, int64_t b) {
  int64_t off = 0;
  for (int j = L.rank - 1; j >= 0; --j) {
    const int64_t i = b % L.dims[j];
    b /= L.dims[j];
    off += i * st.s[j];
  }
  return off;
}

}  // namespace diffbmp
