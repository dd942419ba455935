// Decoding the buffers of an FFI call into raw pointers: the batch layout,
// the primitive and atlas arguments of every scene, with the consistency
// checks both backends need (host code, shared by the CPU and CUDA handlers).
#pragma once

#include <cstdint>
#include <string>

#include "batch_layout.h"
#include "render_common.h"
#include "xla/ffi/api/ffi.h"

namespace diffbmp {

// The arguments of one scene; AT is the atlas element type (float, or bf16 on CUDA).
template <typename AT>
struct SceneInputs {
  const float *xy, *scale, *rotation, *opacity_logit, *color_logit;
  const int32_t* tmpl;
  const AT *mask, *rgb;
  int N;
  AtlasDims ad;
};

// A per-scene argument of a batched call (e.g. the backward's cotangents).
template <typename T>
struct BatchedPtr {
  const T* p;
  BatchStride st;
  DB_HD const T* at(const BatchIndex& b) const { return p + batch_offset(st, b); }
};

// The arguments of every scene of a batched call.
template <typename AT>
struct BatchedInputs {
  SceneInputs<AT> base;  // pointers of scene 0
  BatchLayout layout;
  BatchStride xy, scale, rotation, opacity_logit, color_logit, tmpl, mask, rgb;

  DB_HD SceneInputs<AT> scene(int64_t b) const { return scene(batch_index(layout, b)); }
  DB_HD SceneInputs<AT> scene(const BatchIndex& b) const {
    SceneInputs<AT> s = base;
    s.xy += batch_offset(xy, b);
    s.scale += batch_offset(scale, b);
    s.rotation += batch_offset(rotation, b);
    s.opacity_logit += batch_offset(opacity_logit, b);
    s.color_logit += batch_offset(color_logit, b);
    s.tmpl += batch_offset(tmpl, b);
    s.mask += batch_offset(mask, b);
    s.rgb += batch_offset(rgb, b);
    return s;
  }
};

// The batch dimensions of a call: the leading dimensions of a result whose
// per-scene rank is `scene_rank`.
template <typename Dims>
xla::ffi::Error batch_layout(Dims d, int scene_rank, BatchLayout& L) {
  const int rank = (int)d.size() - scene_rank;
  if (rank < 0) return xla::ffi::Error::InvalidArgument("result rank below its per-scene rank");
  if (rank > kMaxBatchDims)
    return xla::ffi::Error::InvalidArgument("at most " + std::to_string(kMaxBatchDims) +
                                            " nested vmap dimensions are supported");
  L.rank = rank;
  L.count = 1;
  for (int j = 0; j < kMaxBatchDims; ++j) L.dims[j] = j < rank ? d[j] : 1;
  for (int j = 0; j < rank; ++j) L.count *= d[j];
  return xla::ffi::Error::Success();
}

// Strides of an argument with per-scene rank `scene_rank` under layout `L`;
// each batch dimension must be the result's or 1 (shared).
template <typename Dims>
xla::ffi::Error batch_stride(Dims d, int scene_rank, const BatchLayout& L, const char* name,
                             BatchStride& st) {
  using xla::ffi::Error;
  if ((int)d.size() != scene_rank + L.rank)
    return Error::InvalidArgument(std::string(name) + " has rank " + std::to_string(d.size()) +
                                  ", expected " + std::to_string(scene_rank + L.rank));
  int64_t per = 1;
  for (int i = L.rank; i < (int)d.size(); ++i) per *= d[i];
  for (int j = 0; j < kMaxBatchDims; ++j) st.s[j] = 0;
  for (int j = L.rank - 1; j >= 0; --j) {
    if (d[j] != 1 && d[j] != L.dims[j])
      return Error::InvalidArgument(std::string(name) + " batch dimension " + std::to_string(j) +
                                    " is " + std::to_string(d[j]) + ", expected 1 or " +
                                    std::to_string(L.dims[j]));
    st.s[j] = d[j] == 1 ? 0 : per;
    per *= d[j];
  }
  return xla::ffi::Error::Success();
}

template <typename T, xla::ffi::DataType DT>
xla::ffi::Error batched_ptr(xla::ffi::Buffer<DT> buf, int scene_rank, const BatchLayout& L,
                            const char* name, BatchedPtr<T>& out) {
  out.p = reinterpret_cast<const T*>(buf.untyped_data());
  return batch_stride(buf.dimensions(), scene_rank, L, name, out.st);
}

template <typename AT, xla::ffi::DataType DT>
xla::ffi::Error make_inputs(xla::ffi::Buffer<xla::ffi::F32> xy,
                            xla::ffi::Buffer<xla::ffi::F32> scale,
                            xla::ffi::Buffer<xla::ffi::F32> rotation,
                            xla::ffi::Buffer<xla::ffi::F32> opacity_logit,
                            xla::ffi::Buffer<xla::ffi::F32> color_logit,
                            xla::ffi::Buffer<xla::ffi::S32> tmpl, xla::ffi::Buffer<DT> mask,
                            xla::ffi::Buffer<DT> rgb, bool use_rgb, const BatchLayout& L,
                            BatchedInputs<AT>& in) {
  using xla::ffi::Error;
  in.layout = L;
  const int r = L.rank;
  const auto sd = scale.dimensions();
  if ((int)sd.size() != 1 + r) return Error::InvalidArgument("scale must have shape [N]");
  const int64_t N = sd[r];
  const auto xd = xy.dimensions(), cd = color_logit.dimensions();
  const auto rd = rotation.dimensions(), od = opacity_logit.dimensions(),
             td = tmpl.dimensions();
  if ((int)xd.size() != 2 + r || xd[r] != N || xd[r + 1] != 2 || (int)cd.size() != 2 + r ||
      cd[r] != N || cd[r + 1] != 3 || (int)rd.size() != 1 + r || rd[r] != N ||
      (int)od.size() != 1 + r || od[r] != N || (int)td.size() != 1 + r || td[r] != N)
    return Error::InvalidArgument("primitive fields disagree on N");
  const auto md = mask.dimensions();
  if ((int)md.size() != 3 + r || md[r + 1] < 3 || md[r + 2] < 3)
    return Error::InvalidArgument("mask must have shape [P,h+2,w+2] (bitmaps padded by one texel)");
  const auto gd = rgb.dimensions();
  if ((int)gd.size() != 4 + r) return Error::InvalidArgument("rgb must have rank 4");
  if (use_rgb && (gd[r] != md[r] || gd[r + 1] != md[r + 1] || gd[r + 2] != md[r + 2] ||
                  gd[r + 3] != 3))
    return Error::InvalidArgument("rgb must have shape [P,h+2,w+2,3] when use_rgb");
  in.base.N = (int)N;
  in.base.ad = make_atlas_dims((int)md[r], (int)md[r + 1] - 2, (int)md[r + 2] - 2);
  in.base.xy = xy.typed_data();
  in.base.scale = scale.typed_data();
  in.base.rotation = rotation.typed_data();
  in.base.opacity_logit = opacity_logit.typed_data();
  in.base.color_logit = color_logit.typed_data();
  in.base.tmpl = tmpl.typed_data();
  in.base.mask = reinterpret_cast<const AT*>(mask.untyped_data());
  in.base.rgb = reinterpret_cast<const AT*>(rgb.untyped_data());
  Error e = Error::Success();
  if ((e = batch_stride(xd, 2, L, "xy", in.xy)).failure()) return e;
  if ((e = batch_stride(sd, 1, L, "scale", in.scale)).failure()) return e;
  if ((e = batch_stride(rd, 1, L, "rotation", in.rotation)).failure()) return e;
  if ((e = batch_stride(od, 1, L, "opacity_logit", in.opacity_logit)).failure()) return e;
  if ((e = batch_stride(cd, 2, L, "color_logit", in.color_logit)).failure()) return e;
  if ((e = batch_stride(td, 1, L, "template", in.tmpl)).failure()) return e;
  if ((e = batch_stride(md, 3, L, "mask", in.mask)).failure()) return e;
  if ((e = batch_stride(gd, 4, L, "rgb", in.rgb)).failure()) return e;
  return Error::Success();
}

// The scene arguments of a forward call (diffbmp_forward, diffbmp_forward_loss)
// whose transmittance result has dimensions `trans_dims`: the batch layout (in
// `in.layout`), every scene's inputs and the canvas size H x W. At most
// `max_scenes` scenes a call.
template <typename AT, xla::ffi::DataType DT, typename Dims>
xla::ffi::Error forward_inputs(Dims trans_dims, int64_t max_scenes,
                               xla::ffi::Buffer<xla::ffi::F32> xy,
                               xla::ffi::Buffer<xla::ffi::F32> scale,
                               xla::ffi::Buffer<xla::ffi::F32> rotation,
                               xla::ffi::Buffer<xla::ffi::F32> opacity_logit,
                               xla::ffi::Buffer<xla::ffi::F32> color_logit,
                               xla::ffi::Buffer<xla::ffi::S32> tmpl, xla::ffi::Buffer<DT> mask,
                               xla::ffi::Buffer<DT> rgb, bool use_rgb, BatchedInputs<AT>& in,
                               int& H, int& W) {
  BatchLayout L;
  if (auto err = batch_layout(trans_dims, 2, L); err.failure()) return err;
  if (L.count > max_scenes)
    return xla::ffi::Error::InvalidArgument("at most " + std::to_string(max_scenes) +
                                            " scenes per call");
  if (auto err = make_inputs<AT, DT>(xy, scale, rotation, opacity_logit, color_logit, tmpl, mask,
                                     rgb, use_rgb, L, in);
      err.failure())
    return err;
  H = (int)trans_dims[L.rank];
  W = (int)trans_dims[L.rank + 1];
  return xla::ffi::Error::Success();
}

// The pixel-loss arguments of diffbmp_forward_loss: the target and the
// background of every scene.
struct LossInputs {
  BatchedPtr<float> target;  // [H, W, 3]
  BatchedPtr<float> bg;      // [H, W, 3], or [1, 1, 3]: one colour
  int bg_step;               // floats from one pixel's background to the next: 3, or 0
  float grad_scale;
  int64_t tiles;             // tiles of the canvas: each scene's entries of sq_error
};

// Decodes and checks the loss arguments of a call on an H x W canvas, and that
// its sq_error result (`sq_error_count` entries) has one entry per tile of every scene.
inline xla::ffi::Error loss_inputs(xla::ffi::Buffer<xla::ffi::F32> target,
                                   xla::ffi::Buffer<xla::ffi::F32> bg, const BatchLayout& L, int H,
                                   int W, float grad_scale, int64_t sq_error_count,
                                   LossInputs& out) {
  using xla::ffi::Error;
  out.tiles = (int64_t)((W + kTile - 1) / kTile) * ((H + kTile - 1) / kTile);
  if (sq_error_count != L.count * out.tiles)
    return Error::InvalidArgument("sq_error must have one entry per tile of the canvas");
  const int r = L.rank;
  const auto td = target.dimensions(), bd = bg.dimensions();
  if ((int)td.size() != 3 + r || td[r] != H || td[r + 1] != W || td[r + 2] != 3)
    return Error::InvalidArgument("target must have shape [H,W,3] of the canvas");
  const bool per_pixel = (int)bd.size() == 3 + r && bd[r] == H && bd[r + 1] == W && bd[r + 2] == 3;
  const bool one_colour = (int)bd.size() == 3 + r && bd[r] == 1 && bd[r + 1] == 1 && bd[r + 2] == 3;
  if (!per_pixel && !one_colour)
    return Error::InvalidArgument("background must have shape [H,W,3] or [1,1,3]");
  out.bg_step = per_pixel && (int64_t)H * W > 1 ? 3 : 0;
  out.grad_scale = grad_scale;
  Error e = Error::Success();
  if ((e = batched_ptr<float>(target, 3, L, "target", out.target)).failure()) return e;
  return batched_ptr<float>(bg, 3, L, "background", out.bg);
}

}  // namespace diffbmp
