// The CUDA binning's memory: one buffer that XLA allocates, the forward's
// `lists` result (then the backward's argument, read again) or, when those are
// empty, a `workspace` result of each call; sized on the Python side from
// shapes alone (diffbmp_jax/rendering/lowering.py asks `workspace_bytes` of the
// module).
//
// Why not the FFI scratch allocator: its memory is freed when the handler
// returns. XLA may capture the handlers into a CUDA graph (command buffers,
// the handlers are declared compatible) and replay the graph later, when that
// memory may belong to something else; a result buffer lives in XLA's buffer
// assignment, at an address the graph can keep.
//
// Layout, for `prims` primitives and `tiles` tiles of all scenes together and
// a pair capacity `pairs` (each part 256-byte aligned, the base aligned up at
// run time, hence one alignment of slack):
//   Prim     prims          per-primitive set-up
//   TileRect rects          tile rectangle per primitive
//   u64      counts         tiles + 1   pairs per tile (the last entry: 0)
//   u64      starts         tiles + 1   exclusive sum of counts (the last: the pair count)
//   u64      cursor         tiles       write cursors of fill_kernel
//   int      clamped        tiles + 1   starts clamped to the capacity
//   int      ends           tiles       where each list ends (the ordered binning's rows)
//   int32    unsorted, ids  pairs each  tile lists before and after sorting
//   char     scan           the exclusive sum's temporaries (a bound, checked)
#pragma once

#include <cstddef>
#include <cstdint>

#include "render_common.h"

namespace diffbmp {

// Tile rectangle of a primitive (inclusive tile coordinates); empty if x0 > x1.
struct TileRect {
  int x0, y0, x1, y1;
};

constexpr size_t kWorkspaceAlign = 256;

inline size_t align_workspace(size_t n) {
  return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Room for cub's DeviceScan temporaries over `items` 64-bit values: its
// decoupled look-back keeps 16 bytes per tile of at least 128 items plus
// padding; this allows a tile per 32 items. The handler checks cub's own
// figure against it and fails with an error, never overruns.
inline size_t scan_room(int64_t items) { return 4096 + 16 * (size_t)((items + 31) / 32); }

struct WorkspaceLayout {
  size_t prims, rects, counts, starts, cursor, clamped, ends, unsorted, ids, scan;  // byte offsets
  size_t scan_bytes;  // room at `scan`
  size_t bytes;       // the buffer's size, alignment slack included
};

inline WorkspaceLayout workspace_layout(int64_t prims, int64_t tiles, int64_t pairs) {
  WorkspaceLayout w{};
  size_t at = 0;
  auto part = [&at](size_t bytes) {
    const size_t offset = at;
    at += align_workspace(bytes > 0 ? bytes : 1);
    return offset;
  };
  w.prims = part(sizeof(Prim) * (size_t)prims);
  w.rects = part(sizeof(TileRect) * (size_t)prims);
  w.counts = part(sizeof(unsigned long long) * (size_t)(tiles + 1));
  w.starts = part(sizeof(unsigned long long) * (size_t)(tiles + 1));
  w.cursor = part(sizeof(unsigned long long) * (size_t)tiles);
  w.clamped = part(sizeof(int) * (size_t)(tiles + 1));
  w.ends = part(sizeof(int) * (size_t)tiles);
  w.unsorted = part(sizeof(int32_t) * (size_t)pairs);
  w.ids = part(sizeof(int32_t) * (size_t)pairs);
  w.scan_bytes = scan_room(tiles + 1);
  w.scan = part(w.scan_bytes);
  w.bytes = at + kWorkspaceAlign;
  return w;
}

}  // namespace diffbmp
