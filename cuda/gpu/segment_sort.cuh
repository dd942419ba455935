// Sorting the tile lists of the CUDA binning without host synchronisation.
//
// Each segment [bounds[s], bounds[s+1]) of `in` holds distinct primitive
// indices in [0, N) (a tile's list, filled in arbitrary order by atomics);
// sort_segments writes each segment to the same range of `out`, ascending.
//
// Why not cub::DeviceSegmentedSort: with more than a few hundred segments it
// copies its partition sizes to the host and synchronises the stream, on
// every call. Inside an XLA program that stalls the host twice per
// optimisation step (forward and backward) and leaves the GPU idle while the
// host launches the kernels that follow. The keys here are distinct and
// bounded, which allows two simple sorts that need no host round-trip:
//   * segments of at most kSmallSegment keys: one warp each, every key's
//     rank counted against the others in shared memory (most tiles);
//   * longer ones: one block each, a bitmap of the key range in shared
//     memory (in windows of kWindowKeys), then compacted in order with a
//     block-wide prefix sum: O(length + N / 32) per window.
// Both kernels walk all segments with grid-stride loops, so their grids are
// fixed by the launch, not by how many segments of each kind there are.
// If the pair count overflowed the capacity (`*total > capacity`) the lists
// are not read by the tile kernels and nothing is sorted.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/block/block_scan.cuh>

namespace diffbmp {
namespace segsort {

constexpr int kSmallSegment = 128;        // longest segment sorted by one warp
constexpr int kSmallBlock = 256;          // 8 warps, 8 segments at a time
constexpr int kLargeBlock = 256;
constexpr int kWindowWords = 8192;        // 32 KB of shared memory
constexpr int kWindowKeys = 32 * kWindowWords;

__global__ void __launch_bounds__(kSmallBlock)
    sort_small_kernel(int segments, const int* __restrict__ bounds,
                      const unsigned long long* __restrict__ total, long long capacity,
                      const int32_t* __restrict__ in, int32_t* __restrict__ out) {
  __shared__ int32_t s_keys[kSmallBlock / 32][kSmallSegment];
  if (*total > (unsigned long long)capacity) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int32_t* keys = s_keys[warp];
  const int warps = gridDim.x * (kSmallBlock / 32);
  for (int seg = blockIdx.x * (kSmallBlock / 32) + warp; seg < segments; seg += warps) {
    const int b = bounds[seg], len = bounds[seg + 1] - b;
    if (len > kSmallSegment) continue;  // the large kernel's
    if (len <= 1) {
      if (len == 1 && lane == 0) out[b] = in[b];
      continue;
    }
    for (int j = lane; j < len; j += 32) keys[j] = in[b + j];
    __syncwarp();
    for (int j = lane; j < len; j += 32) {
      const int32_t k = keys[j];
      int rank = 0;
      for (int i = 0; i < len; ++i) rank += keys[i] < k;
      out[b + rank] = k;
    }
    __syncwarp();  // keys are overwritten by the next segment
  }
}

__global__ void __launch_bounds__(kLargeBlock)
    sort_large_kernel(int segments, const int* __restrict__ bounds,
                      const unsigned long long* __restrict__ total, long long capacity, int N,
                      const int32_t* __restrict__ in, int32_t* __restrict__ out) {
  using BlockScan = cub::BlockScan<int, kLargeBlock>;
  __shared__ unsigned s_bits[kWindowWords];
  __shared__ typename BlockScan::TempStorage s_scan;
  __shared__ int s_long[kLargeBlock];
  __shared__ int s_count;
  if (*total > (unsigned long long)capacity) return;
  const int all_words = (N + 31) / 32;
  // Block b owns segments b, b + G, b + 2G, ... (G blocks), so long segments
  // spread over all blocks; it finds its long ones 256 at a time.
  for (int64_t r0 = 0; blockIdx.x + r0 * gridDim.x < segments; r0 += kLargeBlock) {
    __syncthreads();  // s_long and s_count of the previous round are no longer read
    if (threadIdx.x == 0) s_count = 0;
    __syncthreads();
    const int64_t mine = blockIdx.x + (r0 + threadIdx.x) * gridDim.x;
    if (mine < segments && bounds[mine + 1] - bounds[mine] > kSmallSegment)
      s_long[atomicAdd(&s_count, 1)] = (int)mine;
    __syncthreads();
    const int count = s_count;
    for (int c = 0; c < count; ++c) {
      const int seg = s_long[c];
      const int b = bounds[seg], e = bounds[seg + 1];
      int cursor = b;
      for (int w0 = 0; w0 < all_words; w0 += kWindowWords) {
        const int words = min(kWindowWords, all_words - w0);
        for (int i = threadIdx.x; i < words; i += kLargeBlock) s_bits[i] = 0u;
        __syncthreads();
        const int k0 = 32 * w0, k1 = k0 + 32 * words;
        for (int j = b + threadIdx.x; j < e; j += kLargeBlock) {
          const int k = in[j];
          if (k >= k0 && k < k1) atomicOr(&s_bits[(k - k0) >> 5], 1u << ((k - k0) & 31));
        }
        __syncthreads();
        // Thread t owns a run of consecutive words, so the keys come out in order.
        const int per = (words + kLargeBlock - 1) / kLargeBlock;
        const int lo = min(words, (int)threadIdx.x * per), hi = min(words, lo + per);
        int n_set = 0;
        for (int i = lo; i < hi; ++i) n_set += __popc(s_bits[i]);
        int before, window_total;
        BlockScan(s_scan).ExclusiveSum(n_set, before, window_total);
        int pos = cursor + before;
        for (int i = lo; i < hi; ++i)
          for (unsigned m = s_bits[i]; m; m &= m - 1) out[pos++] = k0 + 32 * i + (__ffs(m) - 1);
        cursor += window_total;
        __syncthreads();  // s_bits and s_scan are reused
      }
    }
  }
}

// Sorts every segment of `in` into `out` (see the header). `segments` >= 0.
inline cudaError_t sort_segments(cudaStream_t stream, int segments, const int* bounds,
                                 const unsigned long long* total, long long capacity, int N,
                                 const int32_t* in, int32_t* out) {
  if (segments <= 0) return cudaSuccess;
  const int small_blocks = (int)std::min<long long>(
      ((long long)segments + kSmallBlock / 32 - 1) / (kSmallBlock / 32), 4096);
  sort_small_kernel<<<small_blocks, kSmallBlock, 0, stream>>>(segments, bounds, total, capacity,
                                                               in, out);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const int large_blocks = std::min(segments, 1024);
  sort_large_kernel<<<large_blocks, kLargeBlock, 0, stream>>>(segments, bounds, total, capacity,
                                                               N, in, out);
  return cudaGetLastError();
}

}  // namespace segsort
}  // namespace diffbmp
