// Shared math of the tile rasteriser: used by the C++ CPU kernels and the CUDA
// kernels alike, so both backends compute exactly the same function.
//
// Buffer contract of the XLA FFI targets (all row-major, float32 unless noted;
// shapes per scene: under jax.vmap every buffer gains the same leading batch
// dimensions, 1 where it is shared by all scenes, see batch_layout.h):
//
// diffbmp_forward
//   args:  xy [N,2], scale [N], rotation [N], opacity_logit [N], color_logit [N,3],
//          template [N] int32, mask [P,h+2,w+2], rgb [P,h+2,w+2,3] (or [1,1,1,3] unused):
//          h x w bitmaps padded by one texel of zeros on every side (see Taps)
//   attrs: color_blend (f32), alpha_max (f32), use_rgb (s32, 0/1)
//   rets:  color [H,W,3] premultiplied, transmittance [H,W] = prod (1 - a_n),
//          stop [H,W] int32: the primitive index at which front-to-back
//          compositing stopped early (transmittance < kMinTransmittance), or -1
//          when every overlapping primitive was composited. Primitives with an
//          index below `stop` were skipped.
//          lists [bytes] uint8: the CUDA forward's tile binning (cuda/gpu/workspace.h)
//          kept for the backward, when the caller sized it so; the cpu handlers
//          leave it untouched (it is empty in a process without a GPU).
//
// diffbmp_backward
//   args:  the 8 forward args, transmittance [H,W], stop [H,W] int32,
//          d_color [H,W,3], d_transmittance [H,W], lists (the forward's)
//   attrs: color_blend, alpha_max, use_rgb, atlas_grad (s32, 0/1)
//   rets:  d_xy [N,2], d_scale [N], d_rotation [N], d_opacity_logit [N],
//          d_color_logit [N,3], d_mask [P,h+2,w+2] (or [0,h+2,w+2]), d_rgb [P,h+2,w+2,3]
//          (or [0,h+2,w+2,3], also [0,1,1,3] without rgb): the atlas gradients are empty
//          unless atlas_grad, and padded like the atlas (the border's entries are
//          meaningless: the caller drops them)
//
// diffbmp_forward_loss (a module may leave it out: the Python side asks the
// module which targets it exports): the forward with the pixel loss of a fit
// folded in. The image over a background is I = C + T bg; with the residual
// r = I - target per pixel and channel, the loss is s * sum r^2 (s chosen by
// the caller, e.g. 1 / (3 H W) for the mean) and its cotangents dC = 2 s r,
// dT = sum_c dC_c bg_c are exactly what the backward takes: no pass over the
// image between the two kernels.
//   args:  the 8 forward args, target [H,W,3], background [H,W,3] or [1,1,3]
//          (one colour for every pixel)
//   attrs: color_blend, alpha_max, use_rgb, grad_scale (f32): 2 s
//   rets:  d_color [H,W,3] = grad_scale r, transmittance [H,W],
//          d_transmittance [H,W], stop [H,W] int32 (as the forward's),
//          sq_error [tiles_y * tiles_x]: sum r^2 over each 16 x 16 tile's
//          pixels and channels (row-major tiles; summed in a fixed order, so the
//          loss is the same bits run to run), lists (as the forward's)
//
// diffbmp_mse_grad (optional too): forward, pixel loss and backward in one call,
// for the gradient of the loss above with respect to the primitive fields (the
// atlas not differentiated): nothing per pixel leaves the kernel.
//   args:  the 8 forward args, target, background (as diffbmp_forward_loss)
//   attrs: color_blend, alpha_max, use_rgb, grad_scale
//   rets:  d_xy [N,2], d_scale [N], d_rotation [N], d_opacity_logit [N],
//          d_color_logit [N,3] (the backward's, for the cotangents 2 s r, i.e.
//          of the loss s * sum r^2), sq_error [tiles] (as diffbmp_forward_loss)
//
// The CUDA handlers take one more attribute and return one more buffer, after
// the above: pair_capacity (s64) and workspace [bytes] uint8, the memory of
// their binning (cuda/gpu/workspace.h) when `lists` is too small to hold it
// (empty otherwise); the cpu handlers allocate their own.
//
// Backward note: a sample with alpha 0 changes nothing and is skipped, except
// when atlas_grad is set: its mask texels still receive dL/da * alpha_max * o.
//
// Geometry (docs/DESIGN.md §1): for pixel centre (px, py),
//   d = ((px, py) - xy) / scale,  u = cos(r) dx - sin(r) dy,  v = sin(r) dx + cos(r) dy,
//   fx = u * L/2 + w/2 - 1/2,  fy = v * L/2 + h/2 - 1/2   (L = max(h, w)),
// and the bitmap is sampled bilinearly at (fx, fy), zero outside. The kernels
// evaluate it as the affine map it is, fx = kc (px - x) - ks (py - y) + w/2 - 1/2,
// fy = ks (px - x) + kc (py - y) + h/2 - 1/2 with (kc, ks) = L/2 (cos r, sin r) / scale:
// six operations per pixel and candidate instead of ten.
//
// Invalid values inside jit never index out of bounds: a primitive whose
// template id is outside [0, P), whose scale is not > 0, or whose parameters
// are not finite is invisible (contributes nothing, receives zero gradient).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define DB_HD __host__ __device__ __forceinline__
#define DB_UNROLL _Pragma("unroll")
#else
#define DB_HD inline
#define DB_UNROLL
#endif

namespace diffbmp {

// Version of the buffer contract above: the compiled modules export it and the
// Python side refuses modules of another version (a checkout's Python beside
// kernels installed from an older tree).
constexpr int kContractVersion = 4;

constexpr int kTile = 16;                   // tile side in pixels
constexpr float kMinTransmittance = 1e-6f;  // early termination threshold
constexpr float kMaxAlpha = 0.999f;         // keeps 1 - a away from 0 for any input

// Per-primitive quantities computed once per render. Three 16-byte groups,
// so the tile kernels read one from shared memory in three vector loads: what
// the per-pixel test needs (centre and map), what compositing needs (opacity,
// tint), the rest.
struct alignas(16) Prim {
  float x, y;       // centre, pixels
  float kc, ks;     // L/2 cos(r) / scale, L/2 sin(r) / scale: bitmap texels per pixel
  float opacity;    // sigmoid(opacity_logit)
  float tint[3];    // sigmoid(color_logit)
  float inv_scale;  // 1 / scale
  int tmpl;         // bitmap id, -1 if the primitive is invisible
  int pad_[2];
};
static_assert(sizeof(Prim) == 48 && offsetof(Prim, opacity) == 16 && offsetof(Prim, inv_scale) == 32,
              "Prim's three 16-byte groups (the tile kernels' vector loads)");

// Inclusive pixel bounding box; empty when x0 > x1 or y0 > y1.
struct Box {
  int x0, y0, x1, y1;
};

struct AtlasDims {
  int P, h, w;   // bitmaps, each h x w texels
  int pitch;     // w + 2: a padded row, in texels
  int plane;     // (h + 2) * (w + 2): a padded bitmap, in texels
  float half;    // L / 2, bitmap pixels per unit of u
  float off_x;   // w / 2 - 1/2
  float off_y;   // h / 2 - 1/2
};

// Dimensions of P bitmaps of h x w texels, stored padded (see Taps).
DB_HD AtlasDims make_atlas_dims(int P, int h, int w) {
  AtlasDims a;
  a.P = P;
  a.h = h;
  a.w = w;
  a.pitch = w + 2;
  a.plane = (h + 2) * (w + 2);
  a.half = 0.5f * (float)(h > w ? h : w);
  a.off_x = 0.5f * (float)w - 0.5f;
  a.off_y = 0.5f * (float)h - 0.5f;
  return a;
}

DB_HD float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// floor(x) for the per-sample taps, exactly floorf for |x| < 2^31. On the GPU
// floorf is one instruction; a CPU build for the baseline x86-64 (no SSE4.1)
// calls libm for it, twice per sample: truncate and step down instead.
DB_HD float floor_fast(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  const float t = (float)(int)x;
  return t > x ? t - 1.0f : t;
#endif
}

// min(max(a, 0), hi) as fminf(fmaxf(a, 0), hi) gives it (NaN -> 0), without
// the libm calls a baseline CPU build makes for fminf/fmaxf.
DB_HD float clamp_alpha(float a, float hi) {
#if defined(__CUDA_ARCH__)
  return fminf(fmaxf(a, 0.0f), hi);
#else
  a = a > 0.0f ? a : 0.0f;
  return a < hi ? a : hi;
#endif
}

DB_HD bool finitef(float x) { return x - x == 0.0f; }

// 1 / x for x in [1 - kMaxAlpha, 1] (the backward's 1 / (1 - a)): on the GPU the
// hardware reciprocal (about 1 ulp; x is never denormal or huge here), one
// instruction instead of the correctly rounded division's range checks, call
// and slow path (9 instructions a sample) or __fdividef's denormal scaling (4).
DB_HD float recip_unit(float x) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#else
  return 1.0f / x;
#endif
}

// Fills `p` and its screen box for primitive `n`; returns false if invisible
// (nothing to draw on an H x W canvas).
DB_HD bool setup_prim(const float* xy, const float* scale, const float* rotation,
                      const float* opacity_logit, const float* color_logit,
                      const int32_t* tmpl, int n, const AtlasDims& ad, int H, int W,
                      Prim& p, Box& box) {
  p.tmpl = -1;
  box.x0 = box.y0 = 0;
  box.x1 = box.y1 = -1;
  const float x = xy[2 * n], y = xy[2 * n + 1], s = scale[n], r = rotation[n];
  const int t = tmpl[n];
  if (t < 0 || t >= ad.P) return false;
  if (!(s > 0.0f) || !finitef(s) || !finitef(x) || !finitef(y) || !finitef(r)) return false;
  if (!finitef(opacity_logit[n])) return false;
  for (int c = 0; c < 3; ++c)
    if (!finitef(color_logit[3 * n + c])) return false;
  p.x = x;
  p.y = y;
  p.inv_scale = 1.0f / s;
  const float cos_r = cosf(r), sin_r = sinf(r);
  p.kc = ad.half * p.inv_scale * cos_r;
  p.ks = ad.half * p.inv_scale * sin_r;
  p.opacity = sigmoidf(opacity_logit[n]);
  for (int c = 0; c < 3; ++c) p.tint[c] = sigmoidf(color_logit[3 * n + c]);
  // Samples are non-zero only for fx in (-1, w), fy in (-1, h): a local
  // half-extent of (w + 1) / L by (h + 1) / L, rotated into screen space.
  const float hu = ((float)ad.w + 1.0f) / (2.0f * ad.half);
  const float hv = ((float)ad.h + 1.0f) / (2.0f * ad.half);
  const float ac = fabsf(cos_r), as = fabsf(sin_r);
  const float ex = s * (ac * hu + as * hv) + 1.0f;  // +1 pixel of slack for rounding
  const float ey = s * (as * hu + ac * hv) + 1.0f;
  const float fx0 = fmaxf(x - ex, -1.0f), fx1 = fminf(x + ex, (float)W);
  const float fy0 = fmaxf(y - ey, -1.0f), fy1 = fminf(y + ey, (float)H);
  if (!(fx0 <= fx1) || !(fy0 <= fy1)) return false;
  box.x0 = (int)ceilf(fx0);
  box.x1 = (int)floorf(fx1);
  box.y0 = (int)ceilf(fy0);
  box.y1 = (int)floorf(fy1);
  if (box.x0 < 0) box.x0 = 0;
  if (box.y0 < 0) box.y0 = 0;
  if (box.x1 > W - 1) box.x1 = W - 1;
  if (box.y1 > H - 1) box.y1 = H - 1;
  if (box.x0 > box.x1 || box.y0 > box.y1) return false;
  p.tmpl = t;
  return true;
}

// Bitmap coordinates (fx, fy) of pixel centre (px, py).
DB_HD void to_bitmap(const Prim& p, const AtlasDims& ad, float px, float py, float& fx, float& fy) {
  const float dx = px - p.x, dy = py - p.y;
  fx = p.kc * dx - p.ks * dy + ad.off_x;
  fy = p.ks * dx + p.kc * dy + ad.off_y;
}

DB_HD bool inside(const AtlasDims& ad, float fx, float fy) {
  return fx > -1.0f && fx < (float)ad.w && fy > -1.0f && fy < (float)ad.h;
}

// Bilinear taps of a sample position (fx, fy) that inside() accepted. The
// atlas is stored with one texel of zeros around every bitmap, and
// fx in (-1, w), fy in (-1, h) put all four taps inside that padded bitmap:
// no bounds checks, and taps beyond the bitmap read 0 (docs/DESIGN.md §1, "zero
// outside"). The taps are, in order, (x0,y0), (x1,y0), (x0,y1), (x1,y1).
struct Taps {
  int i00;    // padded offset of texel (floor(fx), floor(fy))
  int pitch;  // padded row length
  float tx, ty;
};

DB_HD Taps make_taps(const AtlasDims& ad, int tmpl, float fx, float fy) {
  const float x0f = floor_fast(fx), y0f = floor_fast(fy);
  Taps t;
  t.tx = fx - x0f;
  t.ty = fy - y0f;
  t.pitch = ad.pitch;
  t.i00 = tmpl * ad.plane + ((int)y0f + 1) * ad.pitch + ((int)x0f + 1);
  return t;
}

// Padded texel offset and bilinear weight of tap q (0..3).
DB_HD int tap_index(const Taps& t, int q) { return t.i00 + (q & 1) + (q >> 1) * t.pitch; }

DB_HD float tap_weight(const Taps& t, int q) {
  return ((q & 1) ? t.tx : 1.0f - t.tx) * ((q >> 1) ? t.ty : 1.0f - t.ty);
}

// One texel of the atlas: on the GPU through the read-only data cache.
template <typename TI>
DB_HD TI texel(const TI* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

// Value and (d/dfx, d/dfy) of a single-channel image with `stride` channels.
// `TI` is the atlas storage type: float, or a 16-bit float type convertible to
// float (the CUDA half-precision atlas); arithmetic is always float.
template <typename TI>
DB_HD void sample(const TI* img, int stride, int channel, const Taps& t, float& val,
                  float& dfx, float& dfy) {
  const TI* row0 = img + (int64_t)t.i00 * stride + channel;
  const TI* row1 = row0 + (int64_t)t.pitch * stride;
  const float q0 = (float)texel(row0), q1 = (float)texel(row0 + stride);
  const float q2 = (float)texel(row1), q3 = (float)texel(row1 + stride);
  val = tap_weight(t, 0) * q0 + tap_weight(t, 1) * q1 + tap_weight(t, 2) * q2 +
        tap_weight(t, 3) * q3;
  dfx = (1.0f - t.ty) * (q1 - q0) + t.ty * (q3 - q2);
  dfy = (1.0f - t.tx) * (q2 - q0) + t.tx * (q3 - q1);
}

template <typename TI>
DB_HD float sample_value(const TI* img, int stride, int channel, const Taps& t) {
  const TI* row0 = img + (int64_t)t.i00 * stride + channel;
  const TI* row1 = row0 + (int64_t)t.pitch * stride;
  const float top = (1.0f - t.tx) * (float)texel(row0) + t.tx * (float)texel(row0 + stride);
  const float bottom = (1.0f - t.tx) * (float)texel(row1) + t.tx * (float)texel(row1 + stride);
  return (1.0f - t.ty) * top + t.ty * bottom;
}

// Alpha and straight colour of primitive `p` at a pixel whose taps are `t`.
template <typename TI>
DB_HD float eval_alpha(const Prim& p, const TI* mask, const Taps& t, float alpha_max) {
  const float a = alpha_max * p.opacity * sample_value(mask, 1, 0, t);
  return clamp_alpha(a, kMaxAlpha);
}

template <typename TI>
DB_HD void eval_color(const Prim& p, const TI* rgb, const Taps& t, float k, bool use_rgb,
                      float col[3]) {
  for (int c = 0; c < 3; ++c) {
    col[c] = p.tint[c];
    if (use_rgb) col[c] = (1.0f - k) * p.tint[c] + k * sample_value(rgb, 3, c, t);
  }
}

// Gradient of the primitive's fields from the cotangents of its sample
// position (g_fx, g_fy) at (fx, fy); accumulates into g[8]:
// [x, y, scale, rotation, opacity_logit, color_logit r, g, b]. With the
// bitmap's centre offsets (lx, ly) = (fx, fy) - (w/2 - 1/2, h/2 - 1/2), which
// are L/2 (u, v): d(fx, fy)/dx = -(kc, ks), d/dy = (ks, -kc), d/dscale =
// -(lx, ly) / scale, d/dr = (-ly, lx).
DB_HD void geometry_grad(const Prim& p, const AtlasDims& ad, float fx, float fy, float g_fx,
                         float g_fy, float* g) {
  const float lx = fx - ad.off_x, ly = fy - ad.off_y;
  g[0] -= g_fx * p.kc + g_fy * p.ks;
  g[1] += g_fx * p.ks - g_fy * p.kc;
  g[2] -= (g_fx * lx + g_fy * ly) * p.inv_scale;
  g[3] += g_fy * lx - g_fx * ly;
}

constexpr int kGradFields = 8;

// Front-to-back compositing of one sample (taps t) of primitive p into the
// pixel's premultiplied colour C and transmittance T. Returns false for a
// transparent sample, which changes nothing.
template <typename TI>
DB_HD bool composite_sample(const Prim& p, const TI* mask, const TI* rgb, const Taps& t, float k,
                            float alpha_max, bool use_rgb, float C[3], float& T) {
  const float a = eval_alpha(p, mask, t, alpha_max);
  if (a <= 0.0f) return false;
  float col[3];
  eval_color(p, rgb, t, k, use_rgb, col);
  for (int c = 0; c < 3; ++c) C[c] += T * a * col[c];
  T *= 1.0f - a;
  return true;
}

// The pixel loss of diffbmp_forward_loss at one pixel of final colour C and
// transmittance T: writes dC (grad_scale r) and dT (sum_c dC_c bg_c), returns
// sum_c r_c^2, with r = C + T bg - target.
DB_HD float pixel_loss(const float C[3], float T, const float* bg, const float* target,
                       float grad_scale, float dC[3], float& dT) {
  float e = 0.0f, t = 0.0f;
  for (int c = 0; c < 3; ++c) {
    const float r = C[c] + T * bg[c] - target[c];
    e += r * r;
    dC[c] = grad_scale * r;
    t += dC[c] * bg[c];
  }
  dT = t;
  return e;
}

// What a backward sample leaves for the atlas gradient: dL/d(mask sample) and
// dL/d(rgb sample) per channel; tap q of the sample receives each times
// tap_weight(t, q).
struct AtlasSampleGrad {
  float mask;
  float rgb[3];
};

// One sample of the backward walk, back to front over what the forward
// composited. State: T_after, the transmittance in front of everything walked
// so far (starts at the pixel's final T), and B, their premultiplied colour
// (starts at 0); dC, dT and T_final are the pixel's cotangents and final
// transmittance. Accumulates the primitive's field gradients into g
// (geometry_grad's order) and fills `atlas` when atlas_grad. Returns false when
// the sample is transparent and the atlas is not differentiated: then nothing
// changes (with atlas_grad its texels still receive dL/da * alpha_max * o).
template <typename TI>
DB_HD bool backward_sample(const Prim& p, const AtlasDims& ad, const TI* mask, const TI* rgb,
                           const Taps& t, float fx, float fy, float k, float alpha_max, bool use_rgb,
                           bool atlas_grad, const float dC[3], float dT, float T_final,
                           float& T_after, float B[3], float g[kGradFields],
                           AtlasSampleGrad& atlas) {
  float m, m_fx, m_fy;
  sample(mask, 1, 0, t, m, m_fx, m_fy);
  const float a_raw = alpha_max * p.opacity * m;
  const float a = clamp_alpha(a_raw, kMaxAlpha);
  if (a <= 0.0f && !atlas_grad) return false;
  float col[3], rgb_s[3] = {0, 0, 0}, rgb_fx[3] = {0, 0, 0}, rgb_fy[3] = {0, 0, 0};
  for (int c = 0; c < 3; ++c) {
    col[c] = p.tint[c];
    if (use_rgb) {
      sample(rgb, 3, c, t, rgb_s[c], rgb_fx[c], rgb_fy[c]);
      col[c] = (1.0f - k) * p.tint[c] + k * rgb_s[c];
    }
  }
  // Light reaching this primitive, and dL/da through the colour in front of
  // it (B) and the final transmittance.
  const float inv = recip_unit(1.0f - a);
  const float T_n = T_after * inv;
  float ga = -dT * T_final * inv;
  for (int c = 0; c < 3; ++c) ga += dC[c] * (T_n * col[c] - B[c] * inv);
  for (int c = 0; c < 3; ++c) B[c] += T_n * a * col[c];
  T_after = T_n;

  const float tint_scale = use_rgb ? 1.0f - k : 1.0f;
  const float g_m = a_raw == a ? ga * alpha_max * p.opacity : 0.0f;  // no gradient where clamped
  g[4] += g_m * m * (1.0f - p.opacity);  // d/d opacity_logit
  float g_fx = g_m * m_fx, g_fy = g_m * m_fy;
  for (int c = 0; c < 3; ++c) {
    const float gcol = dC[c] * T_n * a;
    g[5 + c] += gcol * tint_scale * p.tint[c] * (1.0f - p.tint[c]);
    if (use_rgb) {
      g_fx += gcol * k * rgb_fx[c];
      g_fy += gcol * k * rgb_fy[c];
    }
  }
  geometry_grad(p, ad, fx, fy, g_fx, g_fy, g);
  if (atlas_grad) {
    atlas.mask = g_m;
    for (int c = 0; c < 3; ++c) atlas.rgb[c] = dC[c] * T_n * a * k;
  }
  return true;
}

}  // namespace diffbmp
