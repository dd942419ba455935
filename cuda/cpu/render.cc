// C++ CPU backend: the tile-binned rasteriser of docs/DESIGN.md, multithreaded,
// exposed as the XLA FFI handlers DiffbmpForwardCpu / DiffbmpBackwardCpu.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ffi_binding.h"
#include "ffi_inputs.h"
#include "render_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace diffbmp {
namespace {

int num_threads(int work_items) {
  int n = (int)std::thread::hardware_concurrency();
  if (const char* env = std::getenv("DIFFBMP_NUM_THREADS")) n = std::atoi(env);
  n = std::max(1, n);
  return std::min(n, std::max(1, work_items));
}

// Runs f(item) for item in [0, count) on a few threads, handing out
// items on demand (tiles differ wildly in cost). Nothing computed may depend on
// which thread ran an item: results are the same for any thread count.
template <typename F>
void parallel_for(int count, int threads, F&& f) {
  if (threads <= 1) {
    for (int i = 0; i < count; ++i) f(i);
    return;
  }
  std::atomic<int> next{0};
  auto worker = [&] {
    for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) f(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

inline void atomic_add(float* addr, float v) {
  uint32_t* p = reinterpret_cast<uint32_t*>(addr);
  uint32_t old = __atomic_load_n(p, __ATOMIC_RELAXED), next;
  do {
    float f;
    std::memcpy(&f, &old, 4);
    f += v;
    std::memcpy(&next, &f, 4);
  } while (!__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

using Inputs = SceneInputs<float>;

// Primitives binned to tiles: the list of tile t is ids[offsets[t] .. offsets[t+1]),
// ascending primitive index (= depth, back to front).
struct Binning {
  int tiles_x, tiles_y;
  std::vector<Prim> prims;
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
};

Binning bin(const Inputs& in, int H, int W) {
  Binning b;
  b.tiles_x = (W + kTile - 1) / kTile;
  b.tiles_y = (H + kTile - 1) / kTile;
  const int num_tiles = b.tiles_x * b.tiles_y;
  b.prims.resize(in.N);
  std::vector<Box> boxes(in.N);
  std::vector<int64_t> counts(num_tiles + 1, 0);
  for (int n = 0; n < in.N; ++n) {
    Box& bx = boxes[n];
    if (!setup_prim(in.xy, in.scale, in.rotation, in.opacity_logit, in.color_logit, in.tmpl, n,
                    in.ad, H, W, b.prims[n], bx))
      continue;
    for (int ty = bx.y0 / kTile; ty <= bx.y1 / kTile; ++ty)
      for (int tx = bx.x0 / kTile; tx <= bx.x1 / kTile; ++tx) ++counts[ty * b.tiles_x + tx];
  }
  b.offsets.assign(num_tiles + 1, 0);
  for (int t = 0; t < num_tiles; ++t) b.offsets[t + 1] = b.offsets[t] + counts[t];
  b.ids.resize(b.offsets[num_tiles]);
  std::vector<int64_t> fill(b.offsets.begin(), b.offsets.end() - 1);
  for (int n = 0; n < in.N; ++n) {
    if (b.prims[n].tmpl < 0) continue;
    const Box& bx = boxes[n];
    for (int ty = bx.y0 / kTile; ty <= bx.y1 / kTile; ++ty)
      for (int tx = bx.x0 / kTile; tx <= bx.x1 / kTile; ++tx) b.ids[fill[ty * b.tiles_x + tx]++] = n;
  }
  return b;
}

// The pixel columns [lo, hi] of one tile row where a primitive may have a
// sample inside its bitmap; empty when lo > hi. Along a row the bitmap
// coordinates are affine in x, so the columns where fx in (-1, w) and fy in
// (-1, h) (inside()), i.e. |fx - off_x| < (w + 1) / 2 and |fy - off_y| < (h + 1) / 2,
// form one interval, found by clipping the segment between the row's end
// pixels against that box. The box is widened by a relative 1e-4 and the
// interval by a pixel on each side, so rounding never drops a column:
// inside() still decides every pixel in the span, and skipping the others
// changes no result.
struct Span {
  int lo, hi;
};

inline Span row_span(const Prim& p, const AtlasDims& ad, int py, int x0, int x1) {
  // Half-widths of the box around the bitmap's centre, in texels.
  const float hx = ((float)ad.w + 1.0f) * 0.5f * 1.0001f + 1e-5f * ad.half;
  const float hy = ((float)ad.h + 1.0f) * 0.5f * 1.0001f + 1e-5f * ad.half;
  float fx0, fy0, fx1, fy1;
  to_bitmap(p, ad, (float)x0, (float)py, fx0, fy0);
  to_bitmap(p, ad, (float)x1, (float)py, fx1, fy1);
  float t0 = 0.0f, t1 = 1.0f;  // the part of the segment inside the box
  auto clip = [&](float a, float b, float h) {  // keep t with |a + t (b - a)| < h
    const float d = b - a;
    if (d == 0.0f) {
      if (!(std::fabs(a) < h)) t0 = 2.0f;
      return;
    }
    float ta = (-h - a) / d, tb = (h - a) / d;
    if (ta > tb) std::swap(ta, tb);
    t0 = std::max(t0, ta);
    t1 = std::min(t1, tb);
  };
  clip(fx0 - ad.off_x, fx1 - ad.off_x, hx);
  clip(fy0 - ad.off_y, fy1 - ad.off_y, hy);
  if (!(t0 <= t1)) return {1, 0};
  const float len = (float)(x1 - x0);
  return {std::max(x0, (int)std::floor(x0 + t0 * len) - 1),
          std::min(x1, (int)std::ceil(x0 + t1 * len) + 1)};
}

// row_span of every candidate [begin, end) of a tile, for row py.
inline void row_spans(const Binning& b, const AtlasDims& ad, const int32_t* begin,
                      const int32_t* end, int py, int x0, int x1, std::vector<Span>& spans) {
  spans.resize(end - begin);
  for (const int32_t* it = begin; it != end; ++it)
    spans[it - begin] = row_span(b.prims[*it], ad, py, x0, x1);
}

// Runs f(py, x0, x1, begin, end, spans) for every row of tiles [first, last)
// (default: all): the row's pixels x0..x1, its tile's candidates [begin, end)
// and their spans on that row; a tile's rows run in order on one thread.
template <typename F>
void for_each_row(const Binning& b, const AtlasDims& ad, int H, int W, int max_threads, F&& f,
                  int first = 0, int last = -1) {
  if (last < 0) last = b.tiles_x * b.tiles_y;
  const int count = last - first;
  parallel_for(count, std::min(max_threads, num_threads(count)), [&](int item) {
    const int tile = first + item;
    const int x0 = (tile % b.tiles_x) * kTile, y0 = (tile / b.tiles_x) * kTile;
    const int x1 = std::min(x0 + kTile, W) - 1;
    const int32_t* begin = b.ids.data() + b.offsets[tile];
    const int32_t* end = b.ids.data() + b.offsets[tile + 1];
    std::vector<Span> spans;
    for (int py = y0; py < std::min(y0 + kTile, H); ++py) {
      row_spans(b, ad, begin, end, py, x0, x1, spans);
      f(py, x0, x1, begin, end, spans.data());
    }
  });
}

// Rows are walked candidate by candidate, each over the pixels of its span,
// with the row's pixels' state in small arrays: per pixel the candidates come
// in exactly the order of a per-pixel walk (so every pixel's arithmetic, and
// every primitive's sum over pixels, is the same), but a candidate whose span
// misses a pixel costs nothing there. (A per-pixel walk tested every
// candidate of the tile at every pixel: most of the CPU step at demo sizes.)

// The pixel loss of one scene (diffbmp_forward_loss, diffbmp_mse_grad): its target
// and background, and where each tile's squared error (and for the forward,
// d_transmittance) goes.
struct SceneLoss {
  const float* target;  // [H, W, 3]
  const float* bg;      // bg_step floats a pixel
  int bg_step;
  float grad_scale;
  float* d_trans;   // [H, W] (the forward's; unused by mse_grad)
  float* sq_error;  // [tiles]

  float* tile_error(const Binning& b, int py, int x0) const {
    return sq_error + (py / kTile) * b.tiles_x + x0 / kTile;
  }
};

// One tile row's pixels after front-to-back compositing.
struct RowState {
  float T[kTile], C[kTile][3];
  int32_t stopped[kTile];
};

// Composites the candidates [begin, end) of a tile row (pixels x0 .. x0 + nx - 1 of row py).
void composite_row(const Binning& b, const Inputs& in, float k, float alpha_max, bool use_rgb,
                   int py, int x0, int nx, const int32_t* begin, const int32_t* end,
                   const Span* spans, RowState& r) {
  for (int i = 0; i < nx; ++i) {
    r.T[i] = 1.0f;
    r.C[i][0] = r.C[i][1] = r.C[i][2] = 0.0f;
    r.stopped[i] = -1;
  }
  int open = nx;  // pixels still compositing
  for (const int32_t* it = end; it != begin && open > 0;) {  // front (top) to back
    const int n = *--it;
    const Span& sp = spans[it - begin];
    if (sp.lo > sp.hi) continue;
    const Prim& p = b.prims[n];
    for (int px = sp.lo; px <= sp.hi; ++px) {
      const int i = px - x0;
      if (r.stopped[i] >= 0) continue;  // terminated early in front of this primitive
      float fx, fy;
      to_bitmap(p, in.ad, (float)px, (float)py, fx, fy);
      if (!inside(in.ad, fx, fy)) continue;
      const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
      if (!composite_sample(p, in.mask, in.rgb, t, k, alpha_max, use_rgb, r.C[i], r.T[i])) continue;
      if (r.T[i] < kMinTransmittance) {
        r.stopped[i] = n;
        --open;
      }
    }
  }
}

// One scene on at most `max_threads` threads. With `loss`, `color` receives
// d_color instead (render_common.h, diffbmp_forward_loss).
void forward(const Inputs& in, float k, float alpha_max, bool use_rgb, int H, int W,
             int max_threads, float* color, float* trans, int32_t* stop,
             const SceneLoss* loss = nullptr) {
  const Binning b = bin(in, H, W);
  // A tile's rows run in order on one thread: each tile's sum is the same bits for
  // any thread count.
  if (loss) std::fill(loss->sq_error, loss->sq_error + b.tiles_x * b.tiles_y, 0.0f);
  for_each_row(b, in.ad, H, W, max_threads, [&](int py, int x0, int x1, const int32_t* begin,
                                                const int32_t* end, const Span* spans) {
    RowState r;
    const int nx = x1 - x0 + 1;
    composite_row(b, in, k, alpha_max, use_rgb, py, x0, nx, begin, end, spans, r);
    float row_error = 0.0f;
    for (int i = 0; i < nx; ++i) {
      const int64_t pix = (int64_t)py * W + x0 + i;  // 64-bit: 3 * H * W can pass 2^31
      if (loss) {
        float dC[3];
        row_error += pixel_loss(r.C[i], r.T[i], loss->bg + loss->bg_step * pix, loss->target + 3 * pix,
                                loss->grad_scale, dC, loss->d_trans[pix]);
        for (int c = 0; c < 3; ++c) color[3 * pix + c] = dC[c];
      } else {
        for (int c = 0; c < 3; ++c) color[3 * pix + c] = r.C[i][c];
      }
      trans[pix] = r.T[i];
      stop[pix] = r.stopped[i];
    }
    if (loss) *loss->tile_error(b, py, x0) += row_error;
  });
}

// (tile, candidate) pairs whose field accumulators the backward holds at once: 2^22
// (128 MB), or DIFFBMP_CPU_PAIRS_PER_GROUP (a positive integer; tests set it small).
int64_t pairs_per_group() {
  if (const char* env = std::getenv("DIFFBMP_CPU_PAIRS_PER_GROUP")) {
    const long long v = std::atoll(env);
    if (v > 0) return v;
  }
  return (int64_t)1 << 22;
}

// What the backward walk of one tile row starts from, per pixel: the cotangents
// of its colour and transmittance, its final transmittance, and the deepest
// index it composited (INT32_MAX: nothing to do).
struct RowCotangents {
  float dC[kTile][3], dT[kTile], T_final[kTile];
  int32_t first[kTile];

  // Sets pixel i's first index from its stop index (its dC and dT set); returns whether
  // it has anything to walk (a cotangent other than zero).
  bool start(int i, int32_t stop) {
    const bool zero = dC[i][0] == 0.0f && dC[i][1] == 0.0f && dC[i][2] == 0.0f && dT[i] == 0.0f;
    first[i] = zero ? INT32_MAX : stop;
    return !zero;
  }
};

// The backward of one scene. `row_start(py, x0, nx, begin, end, spans, r)` fills
// `r` for a tile row and returns whether any of its pixels has a cotangent:
// read from the forward's buffers (diffbmp_backward), or computed right there
// by the forward and the loss (diffbmp_mse_grad).
template <typename RowStart>
void backward(const Binning& b, const Inputs& in, float k, float alpha_max, bool use_rgb,
              bool atlas_grad, int H, int W, int max_threads, RowStart&& row_start,
              float* grads /* [N, 8] */, float* d_mask, float* d_rgb) {
  // One accumulator per (tile, candidate) pair, beside the tile lists: tiles go to
  // whichever thread is free (dynamic scheduling: their costs differ wildly), no
  // atomics in the hot loop, and the pairs are added below in list order, so the
  // gradients are the same bits for any thread count and schedule. Tiles go in
  // groups of at most pairs_per_group() pairs (at least one tile), which bounds
  // the accumulators' memory (32 bytes a pair) whatever the pair count; the sums'
  // order, and so the result, does not depend on the grouping either.
  const int64_t cap = pairs_per_group();
  const int num_tiles = b.tiles_x * b.tiles_y;
  std::fill(grads, grads + (size_t)in.N * kGradFields, 0.0f);
  std::vector<float> pair_grads;
  for (int t0 = 0; t0 < num_tiles;) {
    int t1 = t0 + 1;
    while (t1 < num_tiles && b.offsets[t1 + 1] - b.offsets[t0] <= cap) ++t1;
    const int64_t pair0 = b.offsets[t0], pairs = b.offsets[t1] - pair0;
    pair_grads.assign((size_t)pairs * kGradFields, 0.0f);
    for_each_row(b, in.ad, H, W, max_threads, [&](int py, int x0, int x1, const int32_t* begin,
                                                  const int32_t* end, const Span* spans) {
      float* g_tile = pair_grads.data() + (size_t)(begin - b.ids.data() - pair0) * kGradFields;
      const int nx = x1 - x0 + 1;
      RowCotangents r;
      if (!row_start(py, x0, nx, begin, end, spans, r)) return;
      float T_after[kTile], B[kTile][3];
      for (int i = 0; i < nx; ++i) {
        T_after[i] = r.T_final[i];
        B[i][0] = B[i][1] = B[i][2] = 0.0f;
      }
      // Back to front over what the forward composited (index >= stop).
      for (const int32_t* it = begin; it != end; ++it) {
        const Span& sp = spans[it - begin];
        if (sp.lo > sp.hi) continue;
        const int n = *it;
        const Prim& p = b.prims[n];
        float* g = g_tile + (size_t)(it - begin) * kGradFields;
        for (int px = sp.lo; px <= sp.hi; ++px) {
          const int i = px - x0;
          if (n < r.first[i]) continue;
          float fx, fy;
          to_bitmap(p, in.ad, (float)px, (float)py, fx, fy);
          if (!inside(in.ad, fx, fy)) continue;
          const Taps t = make_taps(in.ad, p.tmpl, fx, fy);
          AtlasSampleGrad ag;
          if (!backward_sample(p, in.ad, in.mask, in.rgb, t, fx, fy, k, alpha_max, use_rgb, atlas_grad,
                               r.dC[i], r.dT[i], r.T_final[i], T_after[i], B[i], g, ag))
            continue;
          if (atlas_grad) {
            for (int q = 0; q < 4; ++q) {
              atomic_add(d_mask + tap_index(t, q), ag.mask * tap_weight(t, q));
              if (use_rgb)
                for (int c = 0; c < 3; ++c) atomic_add(d_rgb + 3 * tap_index(t, q) + c, ag.rgb[c] * tap_weight(t, q));
            }
          }
        }
      }
    }, t0, t1);
    for (int64_t j = 0; j < pairs; ++j) {
      const float* src = pair_grads.data() + (size_t)j * kGradFields;
      float* dst = grads + (size_t)b.ids[pair0 + j] * kGradFields;
      for (int f = 0; f < kGradFields; ++f) dst[f] += src[f];
    }
    t0 = t1;
  }
}

// diffbmp_backward's rows: the cotangents and the forward's residuals, read.
void backward_from(const Inputs& in, float k, float alpha_max, bool use_rgb, bool atlas_grad, int H,
                   int W, int max_threads, const float* trans, const int32_t* stop,
                   const float* d_color, const float* d_trans, float* grads, float* d_mask,
                   float* d_rgb) {
  const Binning b = bin(in, H, W);
  backward(b, in, k, alpha_max, use_rgb, atlas_grad, H, W, max_threads,
           [&](int py, int x0, int nx, const int32_t*, const int32_t*, const Span*, RowCotangents& r) {
             bool any = false;
             for (int i = 0; i < nx; ++i) {
               const int64_t pix = (int64_t)py * W + x0 + i;
               for (int c = 0; c < 3; ++c) r.dC[i][c] = d_color[3 * pix + c];
               r.dT[i] = d_trans[pix];
               r.T_final[i] = trans[pix];
               any = r.start(i, stop[pix]) || any;
             }
             return any;
           },
           grads, d_mask, d_rgb);
}

// diffbmp_mse_grad: each tile row composited, scored and walked back in one go,
// on one binning; nothing per pixel is written.
void mse_grad(const Inputs& in, float k, float alpha_max, bool use_rgb, int H, int W,
              int max_threads, const SceneLoss& loss, float* grads) {
  const Binning b = bin(in, H, W);
  // A tile's rows run in order on one thread, in one group: each tile's sum is the
  // same bits for any thread count.
  std::fill(loss.sq_error, loss.sq_error + b.tiles_x * b.tiles_y, 0.0f);
  backward(b, in, k, alpha_max, use_rgb, false, H, W, max_threads,
           [&](int py, int x0, int nx, const int32_t* begin, const int32_t* end, const Span* spans,
               RowCotangents& r) {
             RowState f;
             composite_row(b, in, k, alpha_max, use_rgb, py, x0, nx, begin, end, spans, f);
             float row_error = 0.0f;
             bool any = false;
             for (int i = 0; i < nx; ++i) {
               const int64_t pix = (int64_t)py * W + x0 + i;
               row_error += pixel_loss(f.C[i], f.T[i], loss.bg + loss.bg_step * pix, loss.target + 3 * pix,
                                       loss.grad_scale, r.dC[i], r.dT[i]);
               r.T_final[i] = f.T[i];
               any = r.start(i, f.stopped[i]) || any;
             }
             *loss.tile_error(b, py, x0) += row_error;
             return any;
           },
           grads, nullptr, nullptr);
}

// Runs f(scene, threads) for every scene of a batch. With at least as many
// scenes as threads, each thread renders whole scenes on its own (no thread
// start-up per scene, and small scenes keep every core busy); otherwise the
// scenes go one after another, each over all threads. Either way every
// scene's arithmetic, and so its result, is fixed from run to run.
template <typename F>
void for_each_scene(int64_t scenes, F&& f) {
  const int pool = num_threads(INT32_MAX);
  if (scenes >= pool && pool > 1)
    parallel_for((int)scenes, pool, [&](int b) { f(b, 1); });
  else
    for (int64_t b = 0; b < scenes; ++b) f(b, pool);
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                       ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                       ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> rgb, float color_blend,
                       float alpha_max, int32_t use_rgb, ffi::ResultBuffer<ffi::F32> color,
                       ffi::ResultBuffer<ffi::F32> trans, ffi::ResultBuffer<ffi::S32> stop,
                       ffi::ResultBuffer<ffi::U8> /*tile lists: CUDA's, unused here*/) {
  BatchedInputs<float> in;
  int H, W;
  if (auto err = forward_inputs<float, ffi::F32>(trans->dimensions(), INT64_MAX, xy, scale, rotation,
                                                opacity_logit, color_logit, tmpl, mask, rgb,
                                                use_rgb != 0, in, H, W);
      err.failure())
    return err;
  const int64_t pixels = (int64_t)H * W;
  for_each_scene(in.layout.count, [&](int64_t b, int threads) {
    forward(in.scene(b), color_blend, alpha_max, use_rgb != 0, H, W, threads,
            color->typed_data() + 3 * pixels * b, trans->typed_data() + pixels * b,
            stop->typed_data() + pixels * b);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardLossImpl(ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                           ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                           ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                           ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> rgb,
                           ffi::Buffer<ffi::F32> target, ffi::Buffer<ffi::F32> background,
                           float color_blend, float alpha_max, int32_t use_rgb, float grad_scale,
                           ffi::ResultBuffer<ffi::F32> d_color, ffi::ResultBuffer<ffi::F32> trans,
                           ffi::ResultBuffer<ffi::F32> d_trans, ffi::ResultBuffer<ffi::S32> stop,
                           ffi::ResultBuffer<ffi::F32> sq_error,
                           ffi::ResultBuffer<ffi::U8> /*tile lists: CUDA's, unused here*/) {
  BatchedInputs<float> in;
  int H, W;
  if (auto err = forward_inputs<float, ffi::F32>(trans->dimensions(), INT64_MAX, xy, scale, rotation,
                                                opacity_logit, color_logit, tmpl, mask, rgb,
                                                use_rgb != 0, in, H, W);
      err.failure())
    return err;
  const BatchLayout& L = in.layout;
  LossInputs li;
  if (auto err = loss_inputs(target, background, L, H, W, grad_scale, sq_error->element_count(), li);
      err.failure())
    return err;
  const int64_t pixels = (int64_t)H * W;
  for_each_scene(L.count, [&](int64_t b, int threads) {
    const BatchIndex at = batch_index(L, b);
    const SceneLoss loss{li.target.at(at), li.bg.at(at), li.bg_step, li.grad_scale,
                         d_trans->typed_data() + pixels * b, sq_error->typed_data() + li.tiles * b};
    forward(in.scene(at), color_blend, alpha_max, use_rgb != 0, H, W, threads,
            d_color->typed_data() + 3 * pixels * b, trans->typed_data() + pixels * b,
            stop->typed_data() + pixels * b, &loss);
  });
  return ffi::Error::Success();
}

// The five field gradients of a call, dense over its scenes.
struct FieldOutputs {
  float *xy, *scale, *rotation, *opacity_logit, *color_logit;

  // Scene b's gradients from its [N, 8] accumulators (geometry_grad's order).
  void write(const float* grads, int N, int64_t b) const {
    float *gxy = xy + 2 * (int64_t)N * b, *gs = scale + N * b, *gr = rotation + N * b,
          *go = opacity_logit + N * b, *gc = color_logit + 3 * N * b;
    for (int n = 0; n < N; ++n) {
      const float* g = grads + (size_t)n * kGradFields;
      gxy[2 * n] = g[0];
      gxy[2 * n + 1] = g[1];
      gs[n] = g[2];
      gr[n] = g[3];
      go[n] = g[4];
      for (int c = 0; c < 3; ++c) gc[3 * n + c] = g[5 + c];
    }
  }
};

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                        ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                        ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                        ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> rgb,
                        ffi::Buffer<ffi::F32> trans, ffi::Buffer<ffi::S32> stop,
                        ffi::Buffer<ffi::F32> d_color, ffi::Buffer<ffi::F32> d_trans,
                        ffi::Buffer<ffi::U8> /*tile lists: CUDA's, unused here*/,
                        float color_blend, float alpha_max, int32_t use_rgb, int32_t atlas_grad,
                        ffi::ResultBuffer<ffi::F32> d_xy, ffi::ResultBuffer<ffi::F32> d_scale,
                        ffi::ResultBuffer<ffi::F32> d_rotation,
                        ffi::ResultBuffer<ffi::F32> d_opacity_logit,
                        ffi::ResultBuffer<ffi::F32> d_color_logit,
                        ffi::ResultBuffer<ffi::F32> d_mask, ffi::ResultBuffer<ffi::F32> d_rgb) {
  BatchLayout L;
  if (auto err = batch_layout(d_scale->dimensions(), 1, L); err.failure()) return err;
  BatchedInputs<float> in;
  if (auto err = make_inputs<float, ffi::F32>(xy, scale, rotation, opacity_logit, color_logit,
                                             tmpl, mask, rgb, use_rgb != 0, L, in);
      err.failure())
    return err;
  BatchedPtr<float> trans_b, d_color_b, d_trans_b;
  BatchedPtr<int32_t> stop_b;
  ffi::Error e = ffi::Error::Success();
  if ((e = batched_ptr<float>(trans, 2, L, "transmittance", trans_b)).failure()) return e;
  if ((e = batched_ptr<int32_t>(stop, 2, L, "stop", stop_b)).failure()) return e;
  if ((e = batched_ptr<float>(d_color, 3, L, "d_color", d_color_b)).failure()) return e;
  if ((e = batched_ptr<float>(d_trans, 2, L, "d_transmittance", d_trans_b)).failure()) return e;
  const auto td = trans.dimensions();
  const int H = (int)td[L.rank], W = (int)td[L.rank + 1];
  const bool want_atlas = atlas_grad != 0;
  const int64_t scenes = L.count;
  const int64_t atlas_elems = (int64_t)in.base.ad.P * in.base.ad.plane;
  if (want_atlas) {
    if (d_mask->element_count() != scenes * atlas_elems)
      return ffi::Error::InvalidArgument("d_mask must match mask when atlas_grad");
    std::fill(d_mask->typed_data(), d_mask->typed_data() + d_mask->element_count(), 0.0f);
    if (use_rgb) {
      if (d_rgb->element_count() != 3 * scenes * atlas_elems)
        return ffi::Error::InvalidArgument("d_rgb must match rgb when atlas_grad");
      std::fill(d_rgb->typed_data(), d_rgb->typed_data() + d_rgb->element_count(), 0.0f);
    }
  }
  const FieldOutputs out{d_xy->typed_data(), d_scale->typed_data(), d_rotation->typed_data(),
                         d_opacity_logit->typed_data(), d_color_logit->typed_data()};
  const int N = in.base.N;
  for_each_scene(scenes, [&](int64_t b, int threads) {
    std::vector<float> grads((size_t)N * kGradFields);
    const BatchIndex at = batch_index(L, b);
    backward_from(in.scene(at), color_blend, alpha_max, use_rgb != 0, want_atlas, H, W, threads,
                  trans_b.at(at), stop_b.at(at), d_color_b.at(at), d_trans_b.at(at),
                  grads.data(), want_atlas ? d_mask->typed_data() + atlas_elems * b : nullptr,
                  want_atlas && use_rgb ? d_rgb->typed_data() + 3 * atlas_elems * b : nullptr);
    out.write(grads.data(), N, b);
  });
  return ffi::Error::Success();
}

ffi::Error MseGradImpl(ffi::Buffer<ffi::F32> xy, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> rotation, ffi::Buffer<ffi::F32> opacity_logit,
                       ffi::Buffer<ffi::F32> color_logit, ffi::Buffer<ffi::S32> tmpl,
                       ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> rgb,
                       ffi::Buffer<ffi::F32> target, ffi::Buffer<ffi::F32> background,
                       float color_blend, float alpha_max, int32_t use_rgb, float grad_scale,
                       ffi::ResultBuffer<ffi::F32> d_xy, ffi::ResultBuffer<ffi::F32> d_scale,
                       ffi::ResultBuffer<ffi::F32> d_rotation,
                       ffi::ResultBuffer<ffi::F32> d_opacity_logit,
                       ffi::ResultBuffer<ffi::F32> d_color_logit,
                       ffi::ResultBuffer<ffi::F32> sq_error) {
  BatchLayout L;
  if (auto err = batch_layout(d_scale->dimensions(), 1, L); err.failure()) return err;
  BatchedInputs<float> in;
  if (auto err = make_inputs<float, ffi::F32>(xy, scale, rotation, opacity_logit, color_logit,
                                             tmpl, mask, rgb, use_rgb != 0, L, in);
      err.failure())
    return err;
  const auto td = target.dimensions();
  if ((int)td.size() != 3 + L.rank) return ffi::Error::InvalidArgument("target must have shape [H,W,3]");
  const int H = (int)td[L.rank], W = (int)td[L.rank + 1];
  LossInputs li;
  if (auto err = loss_inputs(target, background, L, H, W, grad_scale, sq_error->element_count(), li);
      err.failure())
    return err;
  const FieldOutputs out{d_xy->typed_data(), d_scale->typed_data(), d_rotation->typed_data(),
                         d_opacity_logit->typed_data(), d_color_logit->typed_data()};
  const int N = in.base.N;
  for_each_scene(L.count, [&](int64_t b, int threads) {
    std::vector<float> grads((size_t)N * kGradFields);
    const BatchIndex at = batch_index(L, b);
    const SceneLoss loss{li.target.at(at), li.bg.at(at), li.bg_step, li.grad_scale, nullptr,
                         sq_error->typed_data() + li.tiles * b};
    mse_grad(in.scene(at), color_blend, alpha_max, use_rgb != 0, H, W, threads, loss, grads.data());
    out.write(grads.data(), N, b);
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace diffbmp

XLA_FFI_DEFINE_HANDLER_SYMBOL(DiffbmpForwardCpu, diffbmp::ForwardImpl,
                              ffi::Ffi::Bind() DB_FFI_SCENE_ARGS(ffi::F32) DB_FFI_FORWARD_REST);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DiffbmpBackwardCpu, diffbmp::BackwardImpl,
                              ffi::Ffi::Bind() DB_FFI_SCENE_ARGS(ffi::F32) DB_FFI_BACKWARD_REST);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DiffbmpForwardLossCpu, diffbmp::ForwardLossImpl,
                              ffi::Ffi::Bind() DB_FFI_SCENE_ARGS(ffi::F32) DB_FFI_FORWARD_LOSS_REST);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DiffbmpMseGradCpu, diffbmp::MseGradImpl,
                              ffi::Ffi::Bind() DB_FFI_SCENE_ARGS(ffi::F32) DB_FFI_MSE_GRAD_REST);
