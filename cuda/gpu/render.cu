// CUDA backend: the tile rasteriser of docs/DESIGN.md as XLA FFI handlers
// (platform "CUDA"), computing the same function as cpu/render.cc through the
// shared math of render_common.h. Buffer contract: see render_common.h.
//
// Pipeline of one render (forward or backward), all on the XLA compute stream,
// with no host synchronisation:
//   1. setup_kernel      per primitive: Prim (sigmoids, cos/sin, 1/scale) and its
//                        tile rectangle; each warp then counts its primitives'
//                        pairs per tile atomically, the lanes together.
//   2. DeviceScan        exclusive sum of the tile counts -> tile starts; the
//                        last entry is the total pair count (on the device).
//   3. prepare_kernel    per-tile write cursors, and tile ranges clamped to the
//                        pair capacity.
//   4. fill_kernel       each primitive appends its index to every tile it
//                        covers (a warp per primitive, atomic cursors;
//                        unordered within a tile).
//   5. sort_segments     sorts each tile's segment by primitive index
//                        (= depth, back to front) without a host round-trip
//                        (segment_sort.cuh); its cost follows the pairs
//                        actually present, not the capacity.
//   6. forward_kernel / backward_kernel: one 16x16 block per (tile, scene);
//                        the backward's warps skip candidates that none of
//                        their pixels can see (warps_to_visit).
// Small calls (tiles x primitives up to 2^21, at most 4,096 primitives a
// scene, a row of N pair slots per tile within the capacity) bin in order
// instead: setup without counts, then ordered_bin_kernel writing each tile's
// list already sorted into a row of its own (no scan, cursors, fill or sort).
// Steps 1-5 run in the forward, into its `lists` result (workspace.h), which
// the backward takes back as an argument and reads instead of binning again;
// when the caller left `lists` empty, each call bins into a `workspace` result
// of its own. Both buffers are XLA's, so the handlers keep no memory between
// launches and may be captured into CUDA graphs.
//
// Batches (jax.vmap, see batch_layout.h): one launch per step for all scenes.
// Steps 1-5 run over every scene's primitives at once, each (scene, tile) a
// segment of its own; the tile kernels put the scene on the grid's y axis.
//
// Why this shape. The memory is sized before any kernel runs, so the pair
// buffers hold a pair *capacity* known from shapes alone (the attribute
// pair_capacity, chosen by diffbmp_jax/rendering/lowering.py), not the pair
// count, which only the device knows. The tile kernels read the count: if it
// exceeds the capacity (huge primitives on a large canvas), binning is
// abandoned for that render and every tile block walks all N primitives,
// keeping those whose tile rectangle covers it: slower, same result. Nothing is
// capped: no limit on primitives per tile or per pixel, since the tile kernels
// stream each list through shared memory in batches of 256.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cub/device/device_scan.cuh>
#include <string>

#include "ffi_binding.h"
#include "ffi_inputs.h"
#include "render_common.h"
#include "segment_sort.cuh"
#include "workspace.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace diffbmp {
namespace {

constexpr int kBlock = kTile * kTile;  // 256 threads, one per pixel of a tile
constexpr int kWarps = kBlock / 32;

#define DB_CUDA_TRY(expr)                                                              \
  do {                                                                                 \
    cudaError_t err_ = (expr);                                                         \
    if (err_ != cudaSuccess)                                                           \
      return ffi::Error::Internal(std::string("diffbmp CUDA: ") + #expr + " failed: " + \
                                  cudaGetErrorString(err_));                           \
  } while (0)

#define DB_CUDA_LAUNCHED(name) DB_CUDA_TRY(cudaGetLastError())

template <typename AT>
using DevInputs = BatchedInputs<AT>;

// Primitive i is primitive i % N of scene i / N; arrays over primitives
// are [scenes * N], tile arrays [scenes * num_tiles] (scene-major).
// Per primitive: Prim and its tile rectangle, then one count per covered tile.
// How the count atomics are issued depends on the batch (kWarpEach, chosen at
// launch). With few primitives each gets a warp: every lane sets it up (the
// same values) and the lanes take its tiles in turn, so a large primitive's
// atomics are in flight together (a thread issuing them one after another
// spent 10 us on 1000 primitives at 512^2, as much as the forward kernel;
// a warp each, 4 us). With many, a thread per primitive issues its own: there
// is parallelism enough, and a warp each would repeat the set-up 32 times
// (26 us instead of 17 at 10k primitives, 200 instead of 44 at 100k).
// With kCount false (the ordered binning below) it only writes Prim and rectangle.
template <typename AT, bool kWarpEach, bool kCount = true>
__global__ void setup_kernel(DevInputs<AT> in, int64_t total, int H, int W, int tiles_x,
                             int num_tiles, Prim* __restrict__ prims, TileRect* __restrict__ rects,
                             unsigned long long* __restrict__ tile_counts) {
  const int64_t thread = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t i = kWarpEach ? thread >> 5 : thread;
  const int lane = kWarpEach ? (int)(threadIdx.x & 31) : 0;
  const int step = kWarpEach ? 32 : 1;
  if (i >= total) return;
  const int N = in.base.N;
  const int64_t scene = i / N;
  const int n = (int)(i - scene * N);
  const SceneInputs<AT> s = in.scene(scene);
  unsigned long long* counts = tile_counts + scene * num_tiles;
  Prim p;
  Box b;
  TileRect r{0, 0, -1, -1};
  if (setup_prim(s.xy, s.scale, s.rotation, s.opacity_logit, s.color_logit, s.tmpl, n, s.ad, H,
                 W, p, b)) {
    r.x0 = b.x0 / kTile;
    r.x1 = b.x1 / kTile;
    r.y0 = b.y0 / kTile;
    r.y1 = b.y1 / kTile;
    const int w = r.x1 - r.x0 + 1, h = r.y1 - r.y0 + 1;
    if (kCount)
      for (int j = lane; j < w * h; j += step) atomicAdd(counts + (r.y0 + j / w) * tiles_x + r.x0 + j % w, 1ull);
  }
  if (lane == 0) {
    prims[i] = p;
    rects[i] = r;
  }
}

// Up to this many primitives (all scenes) the set-up gives each a warp.
constexpr int64_t kWarpEachUpTo = 4096;

// Zeroes the five field gradients of `n` primitives (one launch instead of five memsets).
__global__ void zero_fields_kernel(float* __restrict__ xy, float* __restrict__ scale,
                                   float* __restrict__ rotation, float* __restrict__ opacity,
                                   float* __restrict__ color, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  xy[2 * i] = xy[2 * i + 1] = 0.0f;
  scale[i] = rotation[i] = opacity[i] = 0.0f;
  color[3 * i] = color[3 * i + 1] = color[3 * i + 2] = 0.0f;
}

// A tile start clamped to the pair capacity (the tile kernels' and the sort's ranges).
__device__ __forceinline__ int clamp_start(unsigned long long start, long long capacity) {
  return (int)(start < (unsigned long long)capacity ? start : (unsigned long long)capacity);
}

// Write cursors (= tile starts) and tile ranges clamped to the capacity, so
// that the segmented sort never leaves the pair buffers even on overflow.
__global__ void prepare_kernel(int num_tiles, const unsigned long long* __restrict__ starts,
                               long long capacity, unsigned long long* __restrict__ cursor,
                               int* __restrict__ clamped) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t > num_tiles) return;
  const unsigned long long s = starts[t];
  if (t < num_tiles) cursor[t] = s;
  clamped[t] = clamp_start(s, capacity);
}

// Appends each primitive's index (within its scene) to the lists of the
// tiles it covers. One warp per primitive, its lanes taking the tiles of the
// rectangle in turn: the atomics of one primitive are in flight together
// instead of one after another.
__global__ void fill_kernel(int N, int64_t total, int tiles_x, int num_tiles,
                            const TileRect* __restrict__ rects,
                            unsigned long long* __restrict__ cursor, long long capacity,
                            int32_t* __restrict__ ids) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (i >= total) return;
  const int64_t scene = i / N;
  const int n = (int)(i - scene * N);
  unsigned long long* scene_cursor = cursor + scene * num_tiles;
  const TileRect r = rects[i];
  const int w = r.x1 - r.x0 + 1, h = r.y1 - r.y0 + 1;
  if (w <= 0 || h <= 0) return;
  for (int j = lane; j < w * h; j += 32) {
    const int tx = r.x0 + j % w, ty = r.y0 + j / w;
    const unsigned long long pos = atomicAdd(scene_cursor + ty * tiles_x + tx, 1ull);
    if (pos < (unsigned long long)capacity) ids[pos] = n;
  }
}

// Ordered binning, for calls where tiles x primitives is small (ordered_binning):
// each (scene, tile) owns a row of N slots of `ids`, so a block per tile walks
// its scene's tile rectangles in index order, a rectangle per thread and
// kBinBlock x kBinUnroll at a time, and writes those covering its tile into
// its own row, ascending (each warp's ballot, placed after the warps before
// it); the row's first and one-past-last slots go to `starts` and `ends`. One
// launch after the setup: no counts, scan, cursors, atomics or sort. (A warp
// per tile left the GPU nearly empty at 512^2: 4.4 us a pass; a count pass,
// a scan and a write pass into packed lists took 10-11 us, RESULTS.md.)
constexpr int kBinBlock = 256;
constexpr int kBinUnroll = 4;

__global__ void __launch_bounds__(kBinBlock)
    ordered_bin_kernel(int N, int num_tiles, int tiles_x, const TileRect* __restrict__ rects,
                       int* __restrict__ starts, int* __restrict__ ends,
                       unsigned long long* __restrict__ total_pairs, int32_t* __restrict__ ids) {
  constexpr int kBinWarps = kBinBlock / 32;
  __shared__ int warp_count[kBinWarps];
  const int64_t t = blockIdx.x;  // (scene, tile)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // The pair count the tile kernels test against the capacity: every row fits.
  if (t == 0 && tid == 0) *total_pairs = 0;
  const int64_t scene = t / num_tiles;
  const int tile = (int)(t - scene * num_tiles);
  const int tx = tile % tiles_x, ty = tile / tiles_x;
  const TileRect* r = rects + scene * N;
  const int row = (int)(t * N);  // < 2^31: tiles x N is at most kOrderedUpTo
  int at = row;                  // the same in every thread
  for (int base = 0; base < N; base += kBinBlock * kBinUnroll) {
    TileRect q[kBinUnroll];  // loads first: they, not the tests, are the latency
#pragma unroll
    for (int u = 0; u < kBinUnroll; ++u) {
      const int n = base + kBinBlock * u + tid;
      q[u] = n < N ? r[n] : TileRect{0, 0, -1, -1};
    }
#pragma unroll
    for (int u = 0; u < kBinUnroll; ++u) {
      const bool hit = q[u].x0 <= tx && tx <= q[u].x1 && q[u].y0 <= ty && ty <= q[u].y1;
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int before = 0, total = 0;
#pragma unroll
      for (int w = 0; w < kBinWarps; ++w) {
        before += w < warp ? warp_count[w] : 0;
        total += warp_count[w];
      }
      if (hit) ids[at + before + __popc(ballot & ((1u << lane) - 1u))] = base + kBinBlock * u + tid;
      at += total;
      __syncthreads();  // warp_count is rewritten next
    }
  }
  if (tid == 0) {
    starts[t] = row;
    ends[t] = at;
  }
}

// The ordered binning serves a call when its tiles x primitives, all scenes
// together, is at most kOrderedUpTo (512^2 has 1,024 tiles) and a scene has at
// most kOrderedMaxPrims primitives (each tile's block walks them all): its work
// grows with that product, the sorting path's with the pairs (16 scenes of
// 512^2 / 1,000 primitives took 4 % longer a step through its first form).
constexpr int64_t kOrderedUpTo = int64_t(1) << 21;
constexpr int kOrderedMaxPrims = 4096;

// Whether a call of `all_tiles` tiles (all scenes) and N primitives a scene bins
// in order: small enough, and a row of N pair slots for every tile fits in the
// capacity (lowering.py's pair_capacity gives every pair room when that is cheap).
inline bool ordered_binning(int N, int64_t all_tiles, long long capacity) {
  return N <= kOrderedMaxPrims && all_tiles * N <= kOrderedUpTo && all_tiles * N <= capacity;
}

// The pixel of this thread in its tile: each warp covers 8 x 4 pixels (not
// 16 x 2), which on fitted scenes leaves fewer (warp, primitive) pairs with
// any sample inside the bitmap (benchmarks/coverage_stats.py: 53.5 % vs 60 %).
__device__ __forceinline__ void tile_pixel(int tile_x, int tile_y, int& px, int& py) {
  static_assert(kTile == 16 && kWarps == 8, "8 warps of 8 x 4 pixels tile 16 x 16");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  px = tile_x * kTile + (warp & 1) * 8 + (lane & 7);
  py = tile_y * kTile + (warp >> 1) * 4 + (lane >> 3);
}

// Where a tile block reads its candidate primitives: the binned list
// ids[starts[t] .. ends[t]) (ascending; ends = starts + 1 for the sorting
// path's packed lists, a row's end for the ordered binning's), or, when the pair count *total
// (of all scenes) exceeded the capacity, indices [0, N) filtered by tile
// rectangle. `rects` is the block's scene's; `starts` spans every scene.
struct TileLists {
  const int* starts;                  // [scenes * tiles + 1], clamped to the capacity
  const int* ends;                    // [scenes * tiles]
  const int32_t* ids;                 // [capacity]
  const unsigned long long* total;    // pair count, on the device
  long long capacity;
  const TileRect* rects;              // [N] of one scene (kernels offset it)
  int N;
};

// The lists as seen by the block of `scene`.
__device__ __forceinline__ TileLists scene_lists(TileLists L, int64_t scene) {
  L.rects += scene * L.N;
  return L;
}

// The candidate range of a tile; returns whether it is a binned list.
__device__ bool tile_range(const TileLists& L, int tile, int& begin, int& end) {
  if (*L.total <= (unsigned long long)L.capacity) {
    begin = L.starts[tile];
    end = L.ends[tile];
    return true;
  }
  begin = 0;
  end = L.N;
  return false;
}

// A batch of a tile's candidates in shared memory: slot i holds primitive
// id[i] (ascending), and visit[w] is the bitmap of the slots warp w has to
// evaluate (bit b of word j: slot 32 j + b), see warps_to_visit.
struct Batch {
  Prim prim[kBlock];
  int id[kBlock];
  unsigned visit[kWarps][kBlock / 32];
  int warp_count[kWarps];
};

// Which warps of a tile block can see primitive p: bit w is clear only when
// every pixel centre of warp w (8 x 4 pixels, tile_pixel) maps outside the
// open box (-1, w) x (-1, h) of bitmap coordinates where p's samples are
// non-zero. Bitmap coordinates are affine in the pixel, so over a warp's
// rectangle they stay within its centre's value plus or minus the
// half-extents (rx, ry); the margin covers to_bitmap's rounding, so skipping
// never changes a result (the per-pixel test still decides). This tests the
// bitmap's axes only: adding the screen axes (the warp's rectangle against
// the primitive's pixel box) measured no faster (RESULTS.md, issue 17).
__device__ unsigned warps_to_visit(const Prim& p, const AtlasDims& ad, int tile_x, int tile_y) {
  static_assert(kTile == 16 && kWarps == 8, "warps of 8 x 4 pixels, as tile_pixel");
  const float ac = fabsf(p.kc), as = fabsf(p.ks);
  const float rx = 3.5f * ac + 1.5f * as, ry = 3.5f * as + 1.5f * ac;
  // Warp 0's centre, then steps of 8 pixels in x and 4 in y (per pixel,
  // d(fx, fy)/dpx = (kc, ks) and d(fx, fy)/dpy = (-ks, kc)).
  float fx0, fy0;
  to_bitmap(p, ad, (float)(tile_x * kTile) + 3.5f, (float)(tile_y * kTile) + 1.5f, fx0, fy0);
  unsigned bits = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const float ox = (float)((w & 1) * 8), oy = (float)((w >> 1) * 4);
    const float fx = fx0 + ox * p.kc - oy * p.ks, fy = fy0 + ox * p.ks + oy * p.kc;
    const float m = 1e-3f + 1e-5f * (fabsf(fx) + fabsf(fy) + rx + ry);
    const bool seen = fx - rx - m < (float)ad.w && fx + rx + m > -1.0f &&
                      fy - ry - m < (float)ad.h && fy + ry + m > -1.0f;
    bits |= (unsigned)seen << w;
  }
  return p.tmpl >= 0 ? bits : 0u;
}

// Loads candidates [lo, hi) of the tile's list into `s`, compacted and in
// ascending primitive order, with each warp's visit bitmap when kVisit;
// returns how many were kept. Every thread of the block must call it (it holds
// barriers).
template <bool kVisit>
__device__ int load_batch(const TileLists& L, bool binned, const Prim* __restrict__ prims,
                          const AtlasDims& ad, int tile_x, int tile_y, int lo, int hi, Batch& s) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int j = lo + tid;
  int n = -1;
  bool keep = false;
  if (j < hi) {
    if (binned) {
      n = L.ids[j];
      keep = true;
    } else {
      n = j;
      const TileRect r = L.rects[n];
      keep = r.x0 <= tile_x && tile_x <= r.x1 && r.y0 <= tile_y && tile_y <= r.y1;
    }
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, keep);
  if (lane == 0) s.warp_count[warp] = __popc(ballot);
  __syncthreads();
  int before = 0, total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const int c = s.warp_count[w];
    before += w < warp ? c : 0;
    total += c;
  }
  if (keep) {
    const int slot = before + __popc(ballot & ((1u << lane) - 1u));
    s.prim[slot] = prims[n];
    s.id[slot] = n;
  }
  __syncthreads();
  if (!kVisit) return total;
  // Thread tid decides for slot tid; warp j's ballots are word j of every bitmap.
  const unsigned seen = tid < total ? warps_to_visit(s.prim[tid], ad, tile_x, tile_y) : 0u;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const unsigned word = __ballot_sync(0xffffffffu, (seen >> w) & 1u);
    if (lane == 0) s.visit[w][warp] = word;
  }
  __syncthreads();
  return total;
}

// `p` as a value the compiler cannot see through: it then keeps the scene's
// atlas pointer in one register pair and forms each texel row's address with
// one wide multiply-add, instead of re-adding the scene's offset to the
// base (two 64-bit adds, a sign extension and a shift per row).
template <typename T>
__device__ __forceinline__ const T* opaque(const T* p) {
  asm("mov.b64 %0, %0;" : "+l"(p));
  return p;
}

// Five resident blocks an SM, as its 48 registers give anyway: with the bound
// stated, ptxas keeps the pixel centre in registers instead of re-deriving it
// from threadIdx for every candidate (7 more instructions in each candidate test).
// kRgb: the bitmaps' colours blended in (color_blend > 0); a template argument, so
// that the usual call spends no register or branch on the colour path.
template <typename AT, bool kRgb>
__global__ void __launch_bounds__(kBlock, 5)
    forward_kernel(DevInputs<AT> batch, TileLists lists, const Prim* __restrict__ all_prims,
                   int tiles_x, int H, int W, float k, float alpha_max,
                   float* __restrict__ color, float* __restrict__ trans,
                   int32_t* __restrict__ stop) {
  __shared__ Batch s;
  // Block (tile, scene): everything below is that scene's.
  const int64_t scene = blockIdx.y;
  const int num_tiles = gridDim.x;
  SceneInputs<AT> in = batch.scene(scene);
  in.mask = opaque(in.mask);
  in.rgb = opaque(in.rgb);
  const TileLists L = scene_lists(lists, scene);
  const Prim* prims = all_prims + scene * in.N;
  const int64_t pix0 = scene * H * W;
  const int tile = blockIdx.x;
  const int tile_x = tile % tiles_x, tile_y = tile / tiles_x;
  int px, py;
  tile_pixel(tile_x, tile_y, px, py);
  const bool valid = px < W && py < H;
  int begin, end;
  const bool binned = tile_range(L, (int)(scene * num_tiles + tile), begin, end);
  float T = 1.0f, C[3] = {0.0f, 0.0f, 0.0f};
  int32_t stopped = -1;
  bool done = !valid;
  const float fpx = (float)px, fpy = (float)py;
  for (int hi = end; hi > begin; hi -= kBlock) {
    // Also the barrier that lets the previous batch's shared data be overwritten.
    if (__syncthreads_count(done) == kBlock) break;
    const int lo = max(begin, hi - kBlock);
    // No visit bitmaps here: pixels stop early, and deciding for the whole batch
    // up front made the forward slower (RESULTS.md, issue 17).
    const int m = load_batch<false>(L, binned, prims, in.ad, tile_x, tile_y, lo, hi, s);
    if (done) continue;
    for (int i = m - 1; i >= 0; --i) {  // front (top) to back
      const Prim& p = s.prim[i];
      float fx, fy;
      to_bitmap(p, in.ad, fpx, fpy, fx, fy);
      if (!inside(in.ad, fx, fy)) continue;
      const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
      if (!composite_sample(p, in.mask, in.rgb, t, k, alpha_max, kRgb, C, T)) continue;
      if (T < kMinTransmittance) {
        stopped = s.id[i];
        done = true;
        break;
      }
    }
  }
  if (valid) {
    const int64_t pix = pix0 + (int64_t)py * W + px;
    color[3 * pix] = C[0];
    color[3 * pix + 1] = C[1];
    color[3 * pix + 2] = C[2];
    trans[pix] = T;
    stop[pix] = stopped;
  }
}

// Sums the kGradFields (8) gradient fields of one primitive over a warp with
// 9 shuffles instead of 8 x 5: each round halves the fields a lane keeps and
// doubles the lanes summed into them (a transposing reduction). Returns, in
// every lane, the warp's total of field grad_field_of_lane(lane).
__device__ __forceinline__ float warp_field_sum(const float g[kGradFields], int lane) {
  static_assert(kGradFields == 8, "the reduction is written for 8 fields");
  const unsigned all = 0xffffffffu;
  const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4;
  float h[4], q[2];
#pragma unroll
  for (int i = 0; i < 4; ++i)  // lanes 16-31 keep fields 4-7, lanes 0-15 fields 0-3
    h[i] = (b4 ? g[i + 4] : g[i]) + __shfl_xor_sync(all, b4 ? g[i] : g[i + 4], 16);
#pragma unroll
  for (int i = 0; i < 2; ++i)
    q[i] = (b3 ? h[i + 2] : h[i]) + __shfl_xor_sync(all, b3 ? h[i] : h[i + 2], 8);
  float s = (b2 ? q[1] : q[0]) + __shfl_xor_sync(all, b2 ? q[0] : q[1], 4);
  s += __shfl_xor_sync(all, s, 2);
  s += __shfl_xor_sync(all, s, 1);
  return s;
}

// The field whose warp total warp_field_sum leaves in `lane`: bits 4, 3, 2 of
// the lane chose the field's halves, quarters and eighths.
__device__ __forceinline__ int grad_field_of_lane(int lane) { return (lane >> 2) & 7; }

// Gradient results, dense over the scenes.
struct GradOut {
  float *xy, *scale, *rotation, *opacity_logit, *color_logit, *mask, *rgb;

  // Where field f (the order of geometry_grad's g[8]) of primitive n goes:
  // field_base(f) + field_stride(f) * n.
  __device__ float* field_base(int f) const {
    switch (f) {
      case 0: return xy;
      case 1: return xy + 1;
      case 2: return scale;
      case 3: return rotation;
      case 4: return opacity_logit;
      default: return color_logit + (f - 5);
    }
  }
  __device__ static int field_stride(int f) { return f < 2 ? 2 : f < 5 ? 1 : 3; }

  __device__ GradOut scene(int64_t b, int N, int64_t atlas_elems) const {
    const int64_t n = b * N, a = b * atlas_elems;
    return GradOut{xy + 2 * n, scale + n, rotation + n, opacity_logit + n, color_logit + 3 * n,
                   mask ? mask + a : nullptr, rgb ? rgb + 3 * a : nullptr};
  }
};

// The backward's per-pixel arguments (possibly shared across scenes).
struct PixelInputs {
  BatchedPtr<float> trans;
  BatchedPtr<int32_t> stop;
  BatchedPtr<float> d_color;
  BatchedPtr<float> d_trans;
};

// At most 64 registers (4 resident blocks per SM instead of 3 at 80 registers,
// a few bytes spilled): measured faster on the H100 (benchmarks/RESULTS.md).
//
// kPlain: the fits' usual call, without the colour path and without atlas
// gradients, compiled with both known to be off (no register or branch spent on
// them; 5-7 % faster steps on the H100, RESULTS.md stop 34). Otherwise both are
// run-time flags.
template <typename AT, bool kPlain>
__global__ void __launch_bounds__(kBlock, 4)
    backward_kernel(DevInputs<AT> batch, TileLists lists, const Prim* __restrict__ all_prims,
                    int tiles_x, int H, int W, float k, float alpha_max, int use_rgb_flag,
                    int atlas_grad_flag, PixelInputs pixels, GradOut all_out) {
  const bool use_rgb = !kPlain && use_rgb_flag != 0;
  const bool atlas_grad = !kPlain && atlas_grad_flag != 0;
  __shared__ Batch s;
  __shared__ int s_start;
  // Block (tile, scene): everything below is that scene's.
  const int64_t scene = blockIdx.y;
  const int num_tiles = gridDim.x;
  const BatchIndex at = batch_index(batch.layout, scene);
  SceneInputs<AT> in = batch.scene(at);
  in.mask = opaque(in.mask);
  in.rgb = opaque(in.rgb);
  const TileLists L = scene_lists(lists, scene);
  const Prim* prims = all_prims + scene * in.N;
  const float* __restrict__ trans = pixels.trans.at(at);
  const int32_t* __restrict__ stop = pixels.stop.at(at);
  const float* __restrict__ d_color = pixels.d_color.at(at);
  const float* __restrict__ d_trans = pixels.d_trans.at(at);
  const GradOut out = all_out.scene(scene, in.N, (int64_t)in.ad.P * in.ad.plane);
  const int tile = blockIdx.x;
  const int tile_x = tile % tiles_x, tile_y = tile / tiles_x;
  int px, py;
  tile_pixel(tile_x, tile_y, px, py);
  const bool valid = px < W && py < H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* const my_field = out.field_base(grad_field_of_lane(lane));
  const int my_stride = GradOut::field_stride(grad_field_of_lane(lane));
  int begin, end;
  const bool binned = tile_range(L, (int)(scene * num_tiles + tile), begin, end);
  float dC[3] = {0.0f, 0.0f, 0.0f}, dT = 0.0f, T_final = 1.0f;
  int32_t stop_n = -1;
  bool active = false;
  if (valid) {
    const int64_t pix = (int64_t)py * W + px;  // 64-bit: 3 * H * W can pass 2^31
    dC[0] = d_color[3 * pix];
    dC[1] = d_color[3 * pix + 1];
    dC[2] = d_color[3 * pix + 2];
    dT = d_trans[pix];
    T_final = trans[pix];
    stop_n = stop[pix];
    active = !(dC[0] == 0.0f && dC[1] == 0.0f && dC[2] == 0.0f && dT == 0.0f);
  }
  // First list position this pixel composited (index >= stop); the block
  // starts at the smallest one.
  if (threadIdx.x == 0) s_start = end;
  __syncthreads();
  if (active) {
    int first = begin;
    if (stop_n >= 0) {
      if (binned) {
        int a = begin, b = end;  // lower_bound of stop_n
        while (a < b) {
          const int mid = (a + b) >> 1;
          if (L.ids[mid] < stop_n) a = mid + 1;
          else b = mid;
        }
        first = a;
      } else {
        first = stop_n;
      }
    }
    atomicMin(&s_start, first);
  }
  __syncthreads();
  const int start = s_start;
  const float fpx = (float)px, fpy = (float)py;
  float T_after = T_final, B[3] = {0.0f, 0.0f, 0.0f};
  for (int lo = start; lo < end; lo += kBlock) {
    __syncthreads();  // the previous batch is no longer read
    const int hi = min(end, lo + kBlock);
    load_batch<true>(L, binned, prims, in.ad, tile_x, tile_y, lo, hi, s);
    // Back (bottom) to front over the slots this warp has to visit (uniform
    // over the warp: the shuffles below see every lane).
    for (int j = 0; j < kBlock / 32; ++j) {
      for (unsigned bits = s.visit[warp][j]; bits != 0u; bits &= bits - 1u) {
        const int i = 32 * j + __ffs(bits) - 1;
        const int n = s.id[i];
        float g[kGradFields];
#pragma unroll
        for (int f = 0; f < kGradFields; ++f) g[f] = 0.0f;
        bool hit = false;
        if (active && n >= stop_n) {
          const Prim& p = s.prim[i];
          float fx, fy;
          to_bitmap(p, in.ad, fpx, fpy, fx, fy);
          if (inside(in.ad, fx, fy)) {
            const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
            AtlasSampleGrad ag;
            hit = backward_sample(p, in.ad, in.mask, in.rgb, t, fx, fy, k, alpha_max, use_rgb,
                                  atlas_grad, dC, dT, T_final, T_after, B, g, ag);
            if (hit && atlas_grad) {
              for (int q = 0; q < 4; ++q) {
                atomicAdd(out.mask + tap_index(t, q), ag.mask * tap_weight(t, q));
                if (use_rgb)
                  for (int c = 0; c < 3; ++c)
                    atomicAdd(out.rgb + 3 * tap_index(t, q) + c, ag.rgb[c] * tap_weight(t, q));
              }
            }
          }
        }
        // Warp-level sum of the 32 pixels' contributions; 8 lanes then add one
        // field each to global memory.
        if (__any_sync(0xffffffffu, hit)) {
          const float sum = warp_field_sum(g, lane);
          if ((lane & 3) == 0) atomicAdd(my_field + my_stride * n, sum);
        }
      }
    }
  }
}

inline int grid_for(int64_t n, int block) { return (int)((n + block - 1) / block); }

// A buffer of the call that may hold the binning: the forward's `lists`
// result (kept for the backward), the backward's `lists` argument, or a
// `workspace` result (used when `lists` is too small, e.g. empty).
struct Memory {
  char* data;
  size_t bytes;
};

template <typename Buf>
Memory memory_of(Buf& buffer) {
  return {reinterpret_cast<char*>(buffer.untyped_data()), buffer.size_bytes()};
}

// Layout of the binning for `prims` primitives, `tiles` tiles and `capacity`
// pairs in `mem`; an error naming what is missing when it is too small.
ffi::Error carve(Memory mem, int64_t prims, int64_t tiles, long long capacity, WorkspaceLayout& w,
                 char*& base) {
  if (capacity < 0 || capacity > (long long)INT32_MAX)
    return ffi::Error::InvalidArgument("diffbmp CUDA: pair_capacity must be in [0, 2^31), got " +
                                       std::to_string(capacity));
  w = workspace_layout(prims, tiles, capacity);
  if (mem.bytes < w.bytes)
    return ffi::Error::InvalidArgument("diffbmp CUDA: a workspace of " + std::to_string(mem.bytes) +
                                       " bytes, the call needs " + std::to_string(w.bytes) +
                                       " (primitives " + std::to_string(prims) + ", tiles " +
                                       std::to_string(tiles) + ", pairs " +
                                       std::to_string(capacity) + ")");
  const uintptr_t raw = reinterpret_cast<uintptr_t>(mem.data);
  base = reinterpret_cast<char*>((raw + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
  return ffi::Error::Success();
}

// The tile lists and per-primitive set-up as laid out at `base`.
void lists_at(char* base, const WorkspaceLayout& w, int N, int64_t all_tiles, long long capacity,
              TileLists& L, Prim*& prims) {
  prims = reinterpret_cast<Prim*>(base + w.prims);
  L.N = N;
  L.rects = reinterpret_cast<TileRect*>(base + w.rects);
  L.starts = reinterpret_cast<int*>(base + w.clamped);
  L.ends = ordered_binning(N, all_tiles, capacity) ? reinterpret_cast<int*>(base + w.ends)
                                                   : L.starts + 1;
  L.ids = reinterpret_cast<int32_t*>(base + w.ids);
  L.total = reinterpret_cast<unsigned long long*>(base + w.starts) + all_tiles;
  L.capacity = capacity;
}

// True when `mem` is large enough to hold the binning of the call.
bool holds(Memory mem, int64_t prims, int64_t tiles, long long capacity) {
  return capacity >= 0 && mem.bytes >= workspace_layout(prims, tiles, capacity).bytes;
}

// The binning of an earlier forward (its `lists`), when they hold it: no
// launches, `L` and `prims` point into them.
ffi::Error reuse(Memory lists, int N, int64_t scenes, int num_tiles, long long capacity,
                 TileLists& L, Prim*& prims) {
  WorkspaceLayout w;
  char* base;
  if (auto e = carve(lists, scenes * N, scenes * num_tiles, capacity, w, base); e.failure())
    return e;
  lists_at(base, w, N, scenes * num_tiles, capacity, L, prims);
  return ffi::Error::Success();
}

// setup_kernel over `total` primitives, a warp or a thread each (kWarpEachUpTo).
template <typename AT, bool kCount>
void launch_setup(cudaStream_t stream, const DevInputs<AT>& in, int64_t total, int H, int W,
                  int tiles_x, int num_tiles, Prim* prims, TileRect* rects,
                  unsigned long long* counts) {
  if (total <= kWarpEachUpTo)
    setup_kernel<AT, true, kCount><<<grid_for(32 * total, 256), 256, 0, stream>>>(
        in, total, H, W, tiles_x, num_tiles, prims, rects, counts);
  else
    setup_kernel<AT, false, kCount><<<grid_for(total, 256), 256, 0, stream>>>(
        in, total, H, W, tiles_x, num_tiles, prims, rects, counts);
}

// Setup + binning (steps 1-5 of the header) for every scene of the batch, in
// `mem`; on success `L` and `prims` point into it.
template <typename AT>
ffi::Error bin(cudaStream_t stream, Memory mem, long long capacity, const DevInputs<AT>& in, int H,
               int W, int tiles_x, int tiles_y, TileLists& L, Prim*& prims) {
  const int N = in.base.N, num_tiles = tiles_x * tiles_y;
  const int64_t scenes = in.layout.count;
  const int64_t total = scenes * N, all_tiles = scenes * num_tiles;
  if (all_tiles >= INT32_MAX || total >= INT32_MAX)
    return ffi::Error::InvalidArgument("diffbmp CUDA: batch too large for one launch");
  WorkspaceLayout w;
  char* base;
  if (auto e = carve(mem, total, all_tiles, capacity, w, base); e.failure()) return e;
  lists_at(base, w, N, all_tiles, capacity, L, prims);
  auto* rects = reinterpret_cast<TileRect*>(base + w.rects);
  auto* counts = reinterpret_cast<unsigned long long*>(base + w.counts);
  auto* starts = reinterpret_cast<unsigned long long*>(base + w.starts);
  auto* cursor = reinterpret_cast<unsigned long long*>(base + w.cursor);
  auto* clamped = reinterpret_cast<int*>(base + w.clamped);
  auto* unsorted = reinterpret_cast<int32_t*>(base + w.unsorted);
  auto* ids = reinterpret_cast<int32_t*>(base + w.ids);
  // Ordered binning for small scenes (one pass, no atomics, no sort), else count, fill and sort.
  if (ordered_binning(N, all_tiles, capacity)) {
    if (total > 0) {
      launch_setup<AT, false>(stream, in, total, H, W, tiles_x, num_tiles, prims, rects, counts);
      DB_CUDA_LAUNCHED(setup_kernel);
    }
    ordered_bin_kernel<<<(unsigned)all_tiles, kBinBlock, 0, stream>>>(
        N, num_tiles, tiles_x, rects, clamped, reinterpret_cast<int*>(base + w.ends),
        starts + all_tiles, ids);
    DB_CUDA_LAUNCHED(ordered_bin_kernel);
    return ffi::Error::Success();
  }
  DB_CUDA_TRY(cudaMemsetAsync(counts, 0, sizeof(unsigned long long) * (all_tiles + 1), stream));
  if (total > 0) {
    launch_setup<AT, true>(stream, in, total, H, W, tiles_x, num_tiles, prims, rects, counts);
    DB_CUDA_LAUNCHED(setup_kernel);
  }
  size_t scan_bytes = 0;
  DB_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts, starts,
                                            (int)all_tiles + 1, stream));
  if (scan_bytes > w.scan_bytes)
    return ffi::Error::Internal("diffbmp CUDA: the scan needs " + std::to_string(scan_bytes) +
                                " bytes of temporaries, the workspace holds " +
                                std::to_string(w.scan_bytes) + " (workspace.h's scan_room)");
  DB_CUDA_TRY(cub::DeviceScan::ExclusiveSum(base + w.scan, scan_bytes, counts, starts,
                                            (int)all_tiles + 1, stream));
  prepare_kernel<<<grid_for(all_tiles + 1, 256), 256, 0, stream>>>((int)all_tiles, starts,
                                                                   capacity, cursor, clamped);
  DB_CUDA_LAUNCHED(prepare_kernel);
  if (total == 0 || capacity == 0) return ffi::Error::Success();
  fill_kernel<<<grid_for(32 * total, 256), 256, 0, stream>>>(N, total, tiles_x, num_tiles, rects,
                                                        cursor, capacity, unsorted);
  DB_CUDA_LAUNCHED(fill_kernel);
  DB_CUDA_TRY(segsort::sort_segments(stream, (int)all_tiles, clamped, L.total, capacity, N, unsorted,
                                     ids));
  return ffi::Error::Success();
}

template <ffi::DataType DT>
using AtlasT = std::conditional_t<DT == ffi::DataType::BF16, __nv_bfloat16, float>;

// Scenes go on the grid's y dimension.
constexpr int64_t kMaxScenes = 65535;

template <ffi::DataType DT>
ffi::Error ForwardImpl(cudaStream_t stream,
                       ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                       ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                       ffi::Buffer<DT> mask, ffi::Buffer<DT> rgb, float color_blend,
                       float alpha_max, int32_t use_rgb, ffi::ResultBuffer<ffi::F32> color,
                       ffi::ResultBuffer<ffi::F32> trans, ffi::ResultBuffer<ffi::S32> stop,
                       ffi::ResultBuffer<ffi::U8> lists, int64_t pair_capacity,
                       ffi::ResultBuffer<ffi::U8> workspace) {
  using AT = AtlasT<DT>;
  BatchLayout layout;
  if (auto err = batch_layout(trans->dimensions(), 2, layout); err.failure()) return err;
  if (layout.count > kMaxScenes)
    return ffi::Error::InvalidArgument("diffbmp CUDA: at most 65535 scenes per call");
  DevInputs<AT> in;
  if (auto err = make_inputs<AT, DT>(xy, scale, rotation, opacity_logit, color_logit, tmpl, mask,
                                     rgb, use_rgb != 0, layout, in);
      err.failure())
    return err;
  const auto td = trans->dimensions();
  const int H = (int)td[layout.rank], W = (int)td[layout.rank + 1];
  if (H == 0 || W == 0 || layout.count == 0) return ffi::Error::Success();
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  TileLists L;
  Prim* prims;
  // Into `lists` when the caller sized them for the backward, else the workspace.
  const Memory kept = memory_of(*lists);
  const Memory mem = holds(kept, layout.count * in.base.N, layout.count * tiles_x * tiles_y,
                           pair_capacity)
                         ? kept
                         : memory_of(*workspace);
  if (auto err = bin<AT>(stream, mem, pair_capacity, in, H, W, tiles_x, tiles_y, L, prims);
      err.failure())
    return err;
  const dim3 grid(tiles_x * tiles_y, (unsigned)layout.count);
  auto* kernel = use_rgb ? forward_kernel<AT, true> : forward_kernel<AT, false>;
  kernel<<<grid, kBlock, 0, stream>>>(in, L, prims, tiles_x, H, W, color_blend, alpha_max,
                                      color->typed_data(), trans->typed_data(), stop->typed_data());
  DB_CUDA_LAUNCHED(forward_kernel);
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error BackwardImpl(cudaStream_t stream,
                        ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                        ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                        ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                        ffi::Buffer<DT> mask, ffi::Buffer<DT> rgb, ffi::Buffer<ffi::F32> trans,
                        ffi::Buffer<ffi::S32> stop, ffi::Buffer<ffi::F32> d_color,
                        ffi::Buffer<ffi::F32> d_trans, ffi::Buffer<ffi::U8> lists,
                        float color_blend, float alpha_max,
                        int32_t use_rgb, int32_t atlas_grad, ffi::ResultBuffer<ffi::F32> d_xy,
                        ffi::ResultBuffer<ffi::F32> d_scale,
                        ffi::ResultBuffer<ffi::F32> d_rotation,
                        ffi::ResultBuffer<ffi::F32> d_opacity_logit,
                        ffi::ResultBuffer<ffi::F32> d_color_logit,
                        ffi::ResultBuffer<ffi::F32> d_mask, ffi::ResultBuffer<ffi::F32> d_rgb,
                        int64_t pair_capacity, ffi::ResultBuffer<ffi::U8> workspace) {
  using AT = AtlasT<DT>;
  BatchLayout layout;
  if (auto err = batch_layout(d_scale->dimensions(), 1, layout); err.failure()) return err;
  if (layout.count > kMaxScenes)
    return ffi::Error::InvalidArgument("diffbmp CUDA: at most 65535 scenes per call");
  DevInputs<AT> in;
  if (auto err = make_inputs<AT, DT>(xy, scale, rotation, opacity_logit, color_logit, tmpl, mask,
                                     rgb, use_rgb != 0, layout, in);
      err.failure())
    return err;
  PixelInputs pixels;
  ffi::Error e = ffi::Error::Success();
  if ((e = batched_ptr<float>(trans, 2, layout, "transmittance", pixels.trans)).failure()) return e;
  if ((e = batched_ptr<int32_t>(stop, 2, layout, "stop", pixels.stop)).failure()) return e;
  if ((e = batched_ptr<float>(d_color, 3, layout, "d_color", pixels.d_color)).failure()) return e;
  if ((e = batched_ptr<float>(d_trans, 2, layout, "d_transmittance", pixels.d_trans)).failure())
    return e;
  const auto td = trans.dimensions();
  const int H = (int)td[layout.rank], W = (int)td[layout.rank + 1];
  const bool want_atlas = atlas_grad != 0;
  const int64_t scenes = layout.count;
  const int64_t atlas_elems = (int64_t)in.base.ad.P * in.base.ad.plane;
  if (want_atlas) {
    if ((int64_t)d_mask->element_count() != scenes * atlas_elems)
      return ffi::Error::InvalidArgument("d_mask must match mask when atlas_grad");
    if (use_rgb && (int64_t)d_rgb->element_count() != 3 * scenes * atlas_elems)
      return ffi::Error::InvalidArgument("d_rgb must match rgb when atlas_grad");
  }
  GradOut out{d_xy->typed_data(),
              d_scale->typed_data(),
              d_rotation->typed_data(),
              d_opacity_logit->typed_data(),
              d_color_logit->typed_data(),
              d_mask->element_count() ? d_mask->typed_data() : nullptr,
              d_rgb->element_count() ? d_rgb->typed_data() : nullptr};
  const size_t N = (size_t)in.base.N * (size_t)scenes;  // all scenes' primitives
  if (N > 0) {
    zero_fields_kernel<<<grid_for((int64_t)N, 256), 256, 0, stream>>>(out.xy, out.scale, out.rotation,
                                                                      out.opacity_logit, out.color_logit,
                                                                      (int64_t)N);
    DB_CUDA_LAUNCHED(zero_fields_kernel);
  }
  if (d_mask->element_count())
    DB_CUDA_TRY(cudaMemsetAsync(out.mask, 0, sizeof(float) * d_mask->element_count(), stream));
  if (d_rgb->element_count())
    DB_CUDA_TRY(cudaMemsetAsync(out.rgb, 0, sizeof(float) * d_rgb->element_count(), stream));
  if (H == 0 || W == 0 || N == 0) return ffi::Error::Success();
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  TileLists L;
  Prim* prims;
  // The forward's binning when its `lists` hold it (the same primitives, the
  // same canvas), else binning again into the workspace.
  const Memory kept = memory_of(lists);
  const int num_tiles = tiles_x * tiles_y;
  if (holds(kept, scenes * in.base.N, scenes * num_tiles, pair_capacity)) {
    if (auto err = reuse(kept, in.base.N, scenes, num_tiles, pair_capacity, L, prims);
        err.failure())
      return err;
  } else if (auto err = bin<AT>(stream, memory_of(*workspace), pair_capacity, in, H, W, tiles_x,
                                tiles_y, L, prims);
             err.failure()) {
    return err;
  }
  const dim3 grid(num_tiles, (unsigned)scenes);
  // The fits' call (no colours, atlas not differentiated) runs the plain form.
  auto* kernel = use_rgb || want_atlas ? backward_kernel<AT, false> : backward_kernel<AT, true>;
  kernel<<<grid, kBlock, 0, stream>>>(in, L, prims, tiles_x, H, W, color_blend, alpha_max, use_rgb,
                                      want_atlas ? 1 : 0, pixels, out);
  DB_CUDA_LAUNCHED(backward_kernel);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace diffbmp

#define DB_CUDA_CONTEXT .Ctx<ffi::PlatformStream<cudaStream_t>>()

// After the contract's arguments: the pair capacity and the workspace (workspace.h).
#define DB_CUDA_WORKSPACE .Attr<int64_t>("pair_capacity").Ret<ffi::Buffer<ffi::U8>>()

// Command-buffer compatible: XLA may capture the handlers into CUDA graphs
// (they launch work on the stream, never synchronise, and keep no memory of
// their own). DIFFBMP_CUDA_CMD_BUFFER=OFF at build time withdraws the trait,
// for measurements. (The traits must be a macro argument of their own: XLA's
// macro forwards its arguments with ##__VA_ARGS__, which does not expand a
// macro hiding a comma.)
#ifdef DIFFBMP_CUDA_CMD_BUFFER
#define DB_CUDA_HANDLER(NAME, IMPL, BINDING) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, IMPL, BINDING, {ffi::Traits::kCmdBufferCompatible})
#else
#define DB_CUDA_HANDLER(NAME, IMPL, BINDING) XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, IMPL, BINDING)
#endif

#define DB_CUDA_FORWARD(NAME, DT)                                                    \
  DB_CUDA_HANDLER(NAME, diffbmp::ForwardImpl<DT>,                                    \
                  ffi::Ffi::Bind() DB_CUDA_CONTEXT DB_FFI_SCENE_ARGS(DT)             \
                      DB_FFI_FORWARD_REST DB_CUDA_WORKSPACE);

#define DB_CUDA_BACKWARD(NAME, DT)                                                   \
  DB_CUDA_HANDLER(NAME, diffbmp::BackwardImpl<DT>,                                   \
                  ffi::Ffi::Bind() DB_CUDA_CONTEXT DB_FFI_SCENE_ARGS(DT)             \
                      DB_FFI_BACKWARD_REST DB_CUDA_WORKSPACE);

// fp32 atlas (the contract of render_common.h) ...
DB_CUDA_FORWARD(DiffbmpForwardCuda, ffi::F32)
DB_CUDA_BACKWARD(DiffbmpBackwardCuda, ffi::F32)
// ... and the same with a bf16 atlas (mask, rgb); arithmetic and every other
// buffer stay fp32, atlas gradients (d_mask, d_rgb) are returned in fp32.
DB_CUDA_FORWARD(DiffbmpForwardCudaBf16, ffi::BF16)
DB_CUDA_BACKWARD(DiffbmpBackwardCudaBf16, ffi::BF16)
