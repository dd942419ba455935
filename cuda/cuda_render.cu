// CUDA backend: the tile rasteriser of DESIGN §4 as XLA FFI handlers
// (platform "CUDA"), computing the same function as cpu_render.cc through the
// shared math of render_common.h. Buffer contract: see render_common.h.
//
// Pipeline of one render (forward or backward), all on the XLA compute stream:
//   1. setup_kernel     per primitive: Prim (sigmoids, cos/sin, 1/scale), its
//                       tile rectangle, and its tile count (0 when invisible).
//   2. DeviceScan       inclusive sum of the counts (int64) -> pair offsets.
//   3. pair count       ONE 8-byte device->host read + stream sync (see below).
//   4. emit_kernel      (tile, index) pairs, primitive-major, ascending index.
//   5. DeviceRadixSort  SortPairs on the tile id only (bits = log2(tiles));
//                       the sort is stable, so each tile's list stays in
//                       ascending primitive index (= depth, back to front).
//   6. ranges_kernel    [start, end) of every tile in the sorted list.
//   7. forward_kernel / backward_kernel: one 16x16 block per tile.
// Temporaries come from the FFI scratch allocator.
//
// Why one host read (step 3). The scratch allocator is called from the host
// before any kernel runs, so the size of the pair buffers must be known on the
// host, and CUB's radix sort also takes its item count as a host value: sorting
// a host-side bound instead costs time proportional to the bound, and the only
// bound known without reading the device is N * tiles (2048^2 canvas, 100k
// primitives: 1.6e9 pairs, ~26 GB of sort buffers). A device-side count with a
// single 8-byte read (as the 3DGS and gsplat rasterisers do) keeps every buffer
// exact: the cost is one stream synchronisation per forward and per backward
// (the host waits for the setup kernels, some tens of microseconds). The
// handlers are not marked command-buffer compatible, so XLA never captures them
// into a CUDA graph, where the read would be illegal.
//
// No cap on primitives per tile or per pixel: the tile kernels stream each
// list through shared memory in batches of 256. If the pair count is above a
// memory budget (DIFFBMP_CUDA_MAX_PAIRS, default 2^27 pairs ~ 2.3 GB of sort
// buffers) or above INT32_MAX, binning is skipped and every tile block walks all
// N primitives, keeping those whose tile rectangle covers it: slower, same result.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <string>

#include "render_common.h"
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
struct DevInputs {
  const float *xy, *scale, *rotation, *opacity_logit, *color_logit;
  const int32_t* tmpl;
  const AT *mask, *rgb;
  int N;
  AtlasDims ad;
};

// Tile rectangle of a primitive (inclusive tile coordinates); empty if x0 > x1.
struct TileRect {
  int x0, y0, x1, y1;
};

template <typename AT>
__global__ void setup_kernel(DevInputs<AT> in, int H, int W, Prim* __restrict__ prims,
                             TileRect* __restrict__ rects, int64_t* __restrict__ counts) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= in.N) return;
  Prim p;
  Box b;
  TileRect r{0, 0, -1, -1};
  int64_t count = 0;
  if (setup_prim(in.xy, in.scale, in.rotation, in.opacity_logit, in.color_logit, in.tmpl, n,
                 in.ad, H, W, p, b)) {
    r.x0 = b.x0 / kTile;
    r.x1 = b.x1 / kTile;
    r.y0 = b.y0 / kTile;
    r.y1 = b.y1 / kTile;
    count = (int64_t)(r.x1 - r.x0 + 1) * (int64_t)(r.y1 - r.y0 + 1);
  }
  prims[n] = p;
  rects[n] = r;
  counts[n] = count;
}

// Writes the (tile, index) pairs of each primitive at its scanned offset.
__global__ void emit_kernel(int N, int tiles_x, const TileRect* __restrict__ rects,
                            const int64_t* __restrict__ inclusive, uint32_t* __restrict__ keys,
                            int32_t* __restrict__ vals) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const TileRect r = rects[n];
  if (r.x0 > r.x1) return;
  const int64_t count = (int64_t)(r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1);
  int64_t pos = inclusive[n] - count;
  for (int ty = r.y0; ty <= r.y1; ++ty)
    for (int tx = r.x0; tx <= r.x1; ++tx, ++pos) {
      keys[pos] = (uint32_t)(ty * tiles_x + tx);
      vals[pos] = n;
    }
}

// ranges[t] = [start, end) of tile t in the sorted keys (ranges zeroed first).
__global__ void ranges_kernel(int total, const uint32_t* __restrict__ keys, int2* ranges) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const uint32_t k = keys[i];
  if (i == 0 || keys[i - 1] != k) ranges[k].x = i;
  if (i == total - 1 || keys[i + 1] != k) ranges[k].y = i + 1;
}

// Where a tile block reads its candidate primitives: the binned list
// ids[ranges[t].x .. ranges[t].y) (ascending), or, in the all-primitives
// fallback (ids == nullptr), indices [0, N) filtered by tile rectangle.
struct TileLists {
  const int2* ranges;
  const int32_t* ids;
  const TileRect* rects;
  int N;
};

// Loads candidates [lo, hi) of the tile's list into shared memory, compacted
// and in ascending primitive order; returns how many were kept. Every thread
// of the block must call it (it holds barriers).
__device__ int load_batch(const TileLists& L, const Prim* __restrict__ prims, int tile_x,
                          int tile_y, int lo, int hi, Prim* s_prim, int* s_id, int* s_warp) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int j = lo + tid;
  int n = -1;
  bool keep = false;
  if (j < hi) {
    if (L.ids) {
      n = L.ids[j];
      keep = true;
    } else {
      n = j;
      const TileRect r = L.rects[n];
      keep = r.x0 <= tile_x && tile_x <= r.x1 && r.y0 <= tile_y && tile_y <= r.y1;
    }
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, keep);
  if (lane == 0) s_warp[warp] = __popc(ballot);
  __syncthreads();
  int before = 0, total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const int c = s_warp[w];
    before += w < warp ? c : 0;
    total += c;
  }
  if (keep) {
    const int slot = before + __popc(ballot & ((1u << lane) - 1u));
    s_prim[slot] = prims[n];
    s_id[slot] = n;
  }
  __syncthreads();
  return total;
}

template <typename AT>
__global__ void __launch_bounds__(kBlock)
    forward_kernel(DevInputs<AT> in, TileLists L, const Prim* __restrict__ prims, int tiles_x,
                   int H, int W, float k, float alpha_max, int use_rgb, float* __restrict__ color,
                   float* __restrict__ trans, int32_t* __restrict__ stop) {
  __shared__ Prim s_prim[kBlock];
  __shared__ int s_id[kBlock];
  __shared__ int s_warp[kWarps];
  const int tile = blockIdx.x;
  const int tile_x = tile % tiles_x, tile_y = tile / tiles_x;
  const int px = tile_x * kTile + (threadIdx.x % kTile);
  const int py = tile_y * kTile + (threadIdx.x / kTile);
  const bool valid = px < W && py < H;
  int begin = 0, end = L.N;
  if (L.ids) {
    const int2 r = L.ranges[tile];
    begin = r.x;
    end = r.y;
  }
  float T = 1.0f, C[3] = {0.0f, 0.0f, 0.0f};
  int32_t stopped = -1;
  bool done = !valid;
  const float fpx = (float)px, fpy = (float)py;
  for (int hi = end; hi > begin; hi -= kBlock) {
    // Also the barrier that lets the previous batch's shared data be overwritten.
    if (__syncthreads_count(done) == kBlock) break;
    const int lo = max(begin, hi - kBlock);
    const int m = load_batch(L, prims, tile_x, tile_y, lo, hi, s_prim, s_id, s_warp);
    if (done) continue;
    for (int i = m - 1; i >= 0; --i) {  // front (top) to back
      const Prim& p = s_prim[i];
      float u, v, fx, fy;
      to_bitmap(p, in.ad, fpx, fpy, u, v, fx, fy);
      if (!inside(in.ad, fx, fy)) continue;
      const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
      const float a = eval_alpha(p, in.mask, t, alpha_max);
      if (a <= 0.0f) continue;
      float col[3];
      eval_color(p, in.rgb, t, k, use_rgb != 0, col);
      for (int c = 0; c < 3; ++c) C[c] += T * a * col[c];
      T *= 1.0f - a;
      if (T < kMinTransmittance) {
        stopped = s_id[i];
        done = true;
        break;
      }
    }
  }
  if (valid) {
    const int pix = py * W + px;
    color[3 * pix] = C[0];
    color[3 * pix + 1] = C[1];
    color[3 * pix + 2] = C[2];
    trans[pix] = T;
    stop[pix] = stopped;
  }
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_down_sync(0xffffffffu, x, off);
  return x;
}

struct GradOut {
  float *xy, *scale, *rotation, *opacity_logit, *color_logit, *mask, *rgb;
};

template <typename AT>
__global__ void __launch_bounds__(kBlock)
    backward_kernel(DevInputs<AT> in, TileLists L, const Prim* __restrict__ prims, int tiles_x,
                    int H, int W, float k, float alpha_max, int use_rgb, int atlas_grad,
                    const float* __restrict__ trans, const int32_t* __restrict__ stop,
                    const float* __restrict__ d_color, const float* __restrict__ d_trans,
                    GradOut out) {
  __shared__ Prim s_prim[kBlock];
  __shared__ int s_id[kBlock];
  __shared__ int s_warp[kWarps];
  __shared__ int s_start;
  const int tile = blockIdx.x;
  const int tile_x = tile % tiles_x, tile_y = tile / tiles_x;
  const int px = tile_x * kTile + (threadIdx.x % kTile);
  const int py = tile_y * kTile + (threadIdx.x / kTile);
  const bool valid = px < W && py < H;
  const int lane = threadIdx.x & 31;
  int begin = 0, end = L.N;
  if (L.ids) {
    const int2 r = L.ranges[tile];
    begin = r.x;
    end = r.y;
  }
  float dC[3] = {0.0f, 0.0f, 0.0f}, dT = 0.0f, T_final = 1.0f;
  int32_t stop_n = -1;
  bool active = false;
  if (valid) {
    const int pix = py * W + px;
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
      if (L.ids) {
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
  const float tint_scale = use_rgb ? 1.0f - k : 1.0f;
  const float fpx = (float)px, fpy = (float)py;
  float T_after = T_final, B[3] = {0.0f, 0.0f, 0.0f};
  for (int lo = start; lo < end; lo += kBlock) {
    __syncthreads();  // the previous batch is no longer read
    const int hi = min(end, lo + kBlock);
    const int m = load_batch(L, prims, tile_x, tile_y, lo, hi, s_prim, s_id, s_warp);
    for (int i = 0; i < m; ++i) {  // back (bottom) to front
      const int n = s_id[i];
      float g[kGradFields];
#pragma unroll
      for (int f = 0; f < kGradFields; ++f) g[f] = 0.0f;
      bool hit = false;
      if (active && n >= stop_n) {
        const Prim& p = s_prim[i];
        float u, v, fx, fy;
        to_bitmap(p, in.ad, fpx, fpy, u, v, fx, fy);
        if (inside(in.ad, fx, fy)) {
          const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
          float msk, m_fx, m_fy;
          sample(in.mask, 1, 0, t, msk, m_fx, m_fy);
          const float a_raw = alpha_max * p.opacity * msk;
          const float a = fminf(fmaxf(a_raw, 0.0f), kMaxAlpha);
          // As the CPU backend: a transparent sample changes nothing, but with
          // atlas_grad its texels (and, through m_fx/m_fy, the geometry) still
          // receive dL/da * alpha_max * o.
          if (a > 0.0f || atlas_grad) {
            hit = true;
            float col[3], rgb_s[3] = {0, 0, 0}, rgb_fx[3] = {0, 0, 0}, rgb_fy[3] = {0, 0, 0};
            for (int c = 0; c < 3; ++c) {
              col[c] = p.tint[c];
              if (use_rgb) {
                sample(in.rgb, 3, c, t, rgb_s[c], rgb_fx[c], rgb_fy[c]);
                col[c] = (1.0f - k) * p.tint[c] + k * rgb_s[c];
              }
            }
            const float inv = 1.0f / (1.0f - a);
            const float T_n = T_after * inv;
            float ga = -dT * T_final * inv;
            for (int c = 0; c < 3; ++c) ga += dC[c] * (T_n * col[c] - B[c] * inv);
            for (int c = 0; c < 3; ++c) B[c] += T_n * a * col[c];
            T_after = T_n;

            const float g_m = a_raw == a ? ga * alpha_max * p.opacity : 0.0f;
            g[4] += g_m * msk * (1.0f - p.opacity);
            float g_fx = g_m * m_fx, g_fy = g_m * m_fy;
            for (int c = 0; c < 3; ++c) {
              const float gcol = dC[c] * T_n * a;
              g[5 + c] += gcol * tint_scale * p.tint[c] * (1.0f - p.tint[c]);
              if (use_rgb) {
                g_fx += gcol * k * rgb_fx[c];
                g_fy += gcol * k * rgb_fy[c];
              }
            }
            geometry_grad(p, in.ad, u, v, g_fx, g_fy, g);
            if (atlas_grad) {
              for (int q = 0; q < 4; ++q) {
                if (t.idx[q] < 0) continue;
                atomicAdd(out.mask + t.idx[q], g_m * t.wgt[q]);
                if (use_rgb)
                  for (int c = 0; c < 3; ++c)
                    atomicAdd(out.rgb + 3 * t.idx[q] + c, dC[c] * T_n * a * k * t.wgt[q]);
              }
            }
          }
        }
      }
      // Warp-level sum of the 32 pixels' contributions, one atomic per field.
      if (__any_sync(0xffffffffu, hit)) {
#pragma unroll
        for (int f = 0; f < kGradFields; ++f) g[f] = warp_sum(g[f]);
        if (lane == 0) {
          atomicAdd(out.xy + 2 * n, g[0]);
          atomicAdd(out.xy + 2 * n + 1, g[1]);
          atomicAdd(out.scale + n, g[2]);
          atomicAdd(out.rotation + n, g[3]);
          atomicAdd(out.opacity_logit + n, g[4]);
          atomicAdd(out.color_logit + 3 * n, g[5]);
          atomicAdd(out.color_logit + 3 * n + 1, g[6]);
          atomicAdd(out.color_logit + 3 * n + 2, g[7]);
        }
      }
    }
  }
}

int64_t pair_budget() {
  int64_t budget = (int64_t)1 << 27;
  if (const char* env = std::getenv("DIFFBMP_CUDA_MAX_PAIRS")) budget = std::atoll(env);
  return budget < (int64_t)INT32_MAX ? budget : (int64_t)INT32_MAX;
}

inline int grid_for(int64_t n, int block) { return (int)((n + block - 1) / block); }

// Scratch allocation that reports failure as an FFI error.
template <typename T>
ffi::Error scratch_alloc(ffi::ScratchAllocator& scratch, size_t count, T*& ptr) {
  if (count == 0) count = 1;
  auto mem = scratch.Allocate(count * sizeof(T), 16);  // XLA accepts alignments <= 16
  if (!mem.has_value())
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      "diffbmp CUDA: scratch allocation of " + std::to_string(count * sizeof(T)) +
                          " bytes failed");
  ptr = static_cast<T*>(*mem);
  return ffi::Error::Success();
}

// Setup + binning (steps 1-6 of the header). On success `L` and `prims` point
// at scratch memory that lives until the handler returns.
template <typename AT>
ffi::Error bin(cudaStream_t stream, ffi::ScratchAllocator& scratch, const DevInputs<AT>& in,
               int H, int W, int tiles_x, int tiles_y, TileLists& L, Prim*& prims) {
  const int N = in.N, num_tiles = tiles_x * tiles_y;
  TileRect* rects;
  int64_t *counts, *inclusive;
  if (auto e = scratch_alloc(scratch, N, prims); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, N, rects); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, N, counts); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, N, inclusive); e.failure()) return e;
  L.N = N;
  L.rects = rects;
  L.ids = nullptr;
  L.ranges = nullptr;
  if (N == 0) return ffi::Error::Success();
  setup_kernel<AT><<<grid_for(N, 256), 256, 0, stream>>>(in, H, W, prims, rects, counts);
  DB_CUDA_LAUNCHED(setup_kernel);

  size_t scan_bytes = 0;
  DB_CUDA_TRY(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, counts, inclusive, N, stream));
  void* scan_tmp;
  {
    char* p;
    if (auto e = scratch_alloc(scratch, scan_bytes, p); e.failure()) return e;
    scan_tmp = p;
  }
  DB_CUDA_TRY(cub::DeviceScan::InclusiveSum(scan_tmp, scan_bytes, counts, inclusive, N, stream));

  // The one host read of a render (see the header comment).
  int64_t total = 0;
  DB_CUDA_TRY(cudaMemcpyAsync(&total, inclusive + (N - 1), sizeof(int64_t),
                              cudaMemcpyDeviceToHost, stream));
  DB_CUDA_TRY(cudaStreamSynchronize(stream));
  if (total > pair_budget()) return ffi::Error::Success();  // all-primitives fallback

  int2* ranges;
  if (auto e = scratch_alloc(scratch, num_tiles, ranges); e.failure()) return e;
  DB_CUDA_TRY(cudaMemsetAsync(ranges, 0, sizeof(int2) * num_tiles, stream));
  L.ranges = ranges;
  int32_t* ids;
  if (total == 0) {
    if (auto e = scratch_alloc(scratch, 1, ids); e.failure()) return e;
    L.ids = ids;
    return ffi::Error::Success();
  }
  const int count = (int)total;
  uint32_t *keys_in, *keys_out;
  int32_t* vals_in;
  if (auto e = scratch_alloc(scratch, count, keys_in); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, count, keys_out); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, count, vals_in); e.failure()) return e;
  if (auto e = scratch_alloc(scratch, count, ids); e.failure()) return e;
  emit_kernel<<<grid_for(N, 256), 256, 0, stream>>>(N, tiles_x, rects, inclusive, keys_in,
                                                     vals_in);
  DB_CUDA_LAUNCHED(emit_kernel);
  int end_bit = 1;
  while (end_bit < 32 && ((int64_t)1 << end_bit) < num_tiles) ++end_bit;
  size_t sort_bytes = 0;
  DB_CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys_in, keys_out, vals_in,
                                              ids, count, 0, end_bit, stream));
  void* sort_tmp;
  {
    char* p;
    if (auto e = scratch_alloc(scratch, sort_bytes, p); e.failure()) return e;
    sort_tmp = p;
  }
  DB_CUDA_TRY(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, keys_in, keys_out, vals_in,
                                              ids, count, 0, end_bit, stream));
  ranges_kernel<<<grid_for(count, 256), 256, 0, stream>>>(count, keys_out, ranges);
  DB_CUDA_LAUNCHED(ranges_kernel);
  L.ids = ids;
  return ffi::Error::Success();
}

template <ffi::DataType DT>
using AtlasT = std::conditional_t<DT == ffi::DataType::BF16, __nv_bfloat16, float>;

template <ffi::DataType DT>
ffi::Error make_inputs(ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                       ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                       ffi::Buffer<DT> mask, ffi::Buffer<DT> rgb, bool use_rgb,
                       DevInputs<AtlasT<DT>>& in) {
  const auto md = mask.dimensions();
  if (md.size() != 3) return ffi::Error::InvalidArgument("mask must have rank 3 [P,h,w]");
  in.N = (int)scale.element_count();
  if ((int)xy.element_count() != 2 * in.N || (int)rotation.element_count() != in.N ||
      (int)opacity_logit.element_count() != in.N || (int)color_logit.element_count() != 3 * in.N ||
      (int)tmpl.element_count() != in.N)
    return ffi::Error::InvalidArgument("primitive fields disagree on N");
  in.ad = make_atlas_dims((int)md[0], (int)md[1], (int)md[2]);
  if (use_rgb && rgb.element_count() != 3 * mask.element_count())
    return ffi::Error::InvalidArgument("rgb must have shape [P,h,w,3] when use_rgb");
  in.xy = xy.typed_data();
  in.scale = scale.typed_data();
  in.rotation = rotation.typed_data();
  in.opacity_logit = opacity_logit.typed_data();
  in.color_logit = color_logit.typed_data();
  in.tmpl = tmpl.typed_data();
  in.mask = reinterpret_cast<const AtlasT<DT>*>(mask.untyped_data());
  in.rgb = reinterpret_cast<const AtlasT<DT>*>(rgb.untyped_data());
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error ForwardImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                       ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                       ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                       ffi::Buffer<DT> mask, ffi::Buffer<DT> rgb, float color_blend,
                       float alpha_max, int32_t use_rgb, ffi::ResultBuffer<ffi::F32> color,
                       ffi::ResultBuffer<ffi::F32> trans, ffi::ResultBuffer<ffi::S32> stop) {
  using AT = AtlasT<DT>;
  DevInputs<AT> in;
  if (auto err = make_inputs<DT>(xy, scale, rotation, opacity_logit, color_logit, tmpl, mask, rgb,
                                 use_rgb != 0, in);
      err.failure())
    return err;
  const auto td = trans->dimensions();
  if (td.size() != 2) return ffi::Error::InvalidArgument("transmittance must have rank 2 [H,W]");
  const int H = (int)td[0], W = (int)td[1];
  if (H == 0 || W == 0) return ffi::Error::Success();
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  TileLists L;
  Prim* prims;
  if (auto err = bin<AT>(stream, scratch, in, H, W, tiles_x, tiles_y, L, prims); err.failure())
    return err;
  forward_kernel<AT><<<tiles_x * tiles_y, kBlock, 0, stream>>>(
      in, L, prims, tiles_x, H, W, color_blend, alpha_max, use_rgb, color->typed_data(),
      trans->typed_data(), stop->typed_data());
  DB_CUDA_LAUNCHED(forward_kernel);
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error BackwardImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                        ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                        ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                        ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                        ffi::Buffer<DT> mask, ffi::Buffer<DT> rgb, ffi::Buffer<ffi::F32> trans,
                        ffi::Buffer<ffi::S32> stop, ffi::Buffer<ffi::F32> d_color,
                        ffi::Buffer<ffi::F32> d_trans, float color_blend, float alpha_max,
                        int32_t use_rgb, int32_t atlas_grad, ffi::ResultBuffer<ffi::F32> d_xy,
                        ffi::ResultBuffer<ffi::F32> d_scale,
                        ffi::ResultBuffer<ffi::F32> d_rotation,
                        ffi::ResultBuffer<ffi::F32> d_opacity_logit,
                        ffi::ResultBuffer<ffi::F32> d_color_logit,
                        ffi::ResultBuffer<ffi::F32> d_mask, ffi::ResultBuffer<ffi::F32> d_rgb) {
  using AT = AtlasT<DT>;
  DevInputs<AT> in;
  if (auto err = make_inputs<DT>(xy, scale, rotation, opacity_logit, color_logit, tmpl, mask, rgb,
                                 use_rgb != 0, in);
      err.failure())
    return err;
  const auto td = trans.dimensions();
  if (td.size() != 2) return ffi::Error::InvalidArgument("transmittance must have rank 2 [H,W]");
  const int H = (int)td[0], W = (int)td[1];
  const bool want_atlas = atlas_grad != 0;
  if (want_atlas) {
    if (d_mask->element_count() != mask.element_count())
      return ffi::Error::InvalidArgument("d_mask must match mask when atlas_grad");
    if (use_rgb && d_rgb->element_count() != rgb.element_count())
      return ffi::Error::InvalidArgument("d_rgb must match rgb when atlas_grad");
  }
  GradOut out{d_xy->typed_data(),          d_scale->typed_data(),
              d_rotation->typed_data(),    d_opacity_logit->typed_data(),
              d_color_logit->typed_data(), d_mask->typed_data(),
              d_rgb->typed_data()};
  const size_t N = (size_t)in.N;
  DB_CUDA_TRY(cudaMemsetAsync(out.xy, 0, sizeof(float) * 2 * N, stream));
  DB_CUDA_TRY(cudaMemsetAsync(out.scale, 0, sizeof(float) * N, stream));
  DB_CUDA_TRY(cudaMemsetAsync(out.rotation, 0, sizeof(float) * N, stream));
  DB_CUDA_TRY(cudaMemsetAsync(out.opacity_logit, 0, sizeof(float) * N, stream));
  DB_CUDA_TRY(cudaMemsetAsync(out.color_logit, 0, sizeof(float) * 3 * N, stream));
  if (d_mask->element_count())
    DB_CUDA_TRY(cudaMemsetAsync(out.mask, 0, sizeof(float) * d_mask->element_count(), stream));
  if (d_rgb->element_count())
    DB_CUDA_TRY(cudaMemsetAsync(out.rgb, 0, sizeof(float) * d_rgb->element_count(), stream));
  if (H == 0 || W == 0 || N == 0) return ffi::Error::Success();
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  TileLists L;
  Prim* prims;
  if (auto err = bin<AT>(stream, scratch, in, H, W, tiles_x, tiles_y, L, prims); err.failure())
    return err;
  backward_kernel<AT><<<tiles_x * tiles_y, kBlock, 0, stream>>>(
      in, L, prims, tiles_x, H, W, color_blend, alpha_max, use_rgb, want_atlas ? 1 : 0,
      trans.typed_data(), stop.typed_data(), d_color.typed_data(), d_trans.typed_data(), out);
  DB_CUDA_LAUNCHED(backward_kernel);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace diffbmp

#define DB_CUDA_ARGS(DT)                                            \
  .Ctx<ffi::PlatformStream<cudaStream_t>>()                         \
      .Ctx<ffi::ScratchAllocator>()                                 \
      .Arg<ffi::Buffer<ffi::F32>>() /*xy*/                          \
      .Arg<ffi::Buffer<ffi::F32>>() /*scale*/                       \
      .Arg<ffi::Buffer<ffi::F32>>() /*rotation*/                    \
      .Arg<ffi::Buffer<ffi::F32>>() /*opacity_logit*/               \
      .Arg<ffi::Buffer<ffi::F32>>() /*color_logit*/                 \
      .Arg<ffi::Buffer<ffi::S32>>() /*template*/                    \
      .Arg<ffi::Buffer<DT>>() /*mask*/                              \
      .Arg<ffi::Buffer<DT>>() /*rgb*/

#define DB_CUDA_FORWARD(NAME, DT)                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, diffbmp::ForwardImpl<DT>,                     \
                                ffi::Ffi::Bind() DB_CUDA_ARGS(DT)                   \
                                    .Attr<float>("color_blend")                     \
                                    .Attr<float>("alpha_max")                       \
                                    .Attr<int32_t>("use_rgb")                       \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*color*/         \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*transmittance*/ \
                                    .Ret<ffi::Buffer<ffi::S32>>() /*stop*/);

#define DB_CUDA_BACKWARD(NAME, DT)                                                \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, diffbmp::BackwardImpl<DT>,                  \
                                ffi::Ffi::Bind() DB_CUDA_ARGS(DT)                 \
                                    .Arg<ffi::Buffer<ffi::F32>>() /*trans*/       \
                                    .Arg<ffi::Buffer<ffi::S32>>() /*stop*/        \
                                    .Arg<ffi::Buffer<ffi::F32>>() /*d_color*/     \
                                    .Arg<ffi::Buffer<ffi::F32>>() /*d_trans*/     \
                                    .Attr<float>("color_blend")                   \
                                    .Attr<float>("alpha_max")                     \
                                    .Attr<int32_t>("use_rgb")                     \
                                    .Attr<int32_t>("atlas_grad")                  \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_xy*/        \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_scale*/     \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_rotation*/  \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_opacity*/   \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_color*/     \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_mask*/      \
                                    .Ret<ffi::Buffer<ffi::F32>>() /*d_rgb*/);

// fp32 atlas (the contract of render_common.h) ...
DB_CUDA_FORWARD(DiffbmpForwardCuda, ffi::F32)
DB_CUDA_BACKWARD(DiffbmpBackwardCuda, ffi::F32)
// ... and the same with a bf16 atlas (mask, rgb); arithmetic and every other
// buffer stay fp32, atlas gradients (d_mask, d_rgb) are returned in fp32.
DB_CUDA_FORWARD(DiffbmpForwardCudaBf16, ffi::BF16)
DB_CUDA_BACKWARD(DiffbmpBackwardCudaBf16, ffi::BF16)
