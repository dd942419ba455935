// Decoding the primitive and atlas buffers of an FFI call into raw pointers,
// with the consistency checks both backends need (host code, shared by the
// CPU handlers and the CUDA handlers).
#pragma once

#include <cstdint>

#include "render_common.h"
#include "xla/ffi/api/ffi.h"

namespace diffbmp {

// The arguments of a render; AT is the atlas element type (float, or bf16 on CUDA).
template <typename AT>
struct SceneInputs {
  const float *xy, *scale, *rotation, *opacity_logit, *color_logit;
  const int32_t* tmpl;
  const AT *mask, *rgb;
  int N;
  AtlasDims ad;
};

template <typename AT, xla::ffi::DataType DT>
xla::ffi::Error make_inputs(xla::ffi::Buffer<xla::ffi::F32> xy,
                            xla::ffi::Buffer<xla::ffi::F32> scale,
                            xla::ffi::Buffer<xla::ffi::F32> rotation,
                            xla::ffi::Buffer<xla::ffi::F32> opacity_logit,
                            xla::ffi::Buffer<xla::ffi::F32> color_logit,
                            xla::ffi::Buffer<xla::ffi::S32> tmpl, xla::ffi::Buffer<DT> mask,
                            xla::ffi::Buffer<DT> rgb, bool use_rgb, SceneInputs<AT>& in) {
  using xla::ffi::Error;
  const auto md = mask.dimensions();
  if (md.size() != 3) return Error::InvalidArgument("mask must have rank 3 [P,h,w]");
  in.N = (int)scale.element_count();
  if ((int)xy.element_count() != 2 * in.N || (int)rotation.element_count() != in.N ||
      (int)opacity_logit.element_count() != in.N || (int)color_logit.element_count() != 3 * in.N ||
      (int)tmpl.element_count() != in.N)
    return Error::InvalidArgument("primitive fields disagree on N");
  in.ad = make_atlas_dims((int)md[0], (int)md[1], (int)md[2]);
  if (use_rgb && rgb.element_count() != 3 * mask.element_count())
    return Error::InvalidArgument("rgb must have shape [P,h,w,3] when use_rgb");
  in.xy = xy.typed_data();
  in.scale = scale.typed_data();
  in.rotation = rotation.typed_data();
  in.opacity_logit = opacity_logit.typed_data();
  in.color_logit = color_logit.typed_data();
  in.tmpl = tmpl.typed_data();
  in.mask = reinterpret_cast<const AT*>(mask.untyped_data());
  in.rgb = reinterpret_cast<const AT*>(rgb.untyped_data());
  return Error::Success();
}

}  // namespace diffbmp
