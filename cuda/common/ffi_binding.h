// The argument lists of the FFI targets, written once for both backends:
//
//   Ffi::Bind() [backend contexts] DB_FFI_SCENE_ARGS(atlas dtype) DB_FFI_FORWARD_REST
//   Ffi::Bind() [backend contexts] DB_FFI_SCENE_ARGS(atlas dtype) DB_FFI_BACKWARD_REST
//   Ffi::Bind() [backend contexts] DB_FFI_SCENE_ARGS(atlas dtype) DB_FFI_FORWARD_LOSS_REST
//   Ffi::Bind() [backend contexts] DB_FFI_SCENE_ARGS(atlas dtype) DB_FFI_MSE_GRAD_REST
//
// in the order of the buffer contract in render_common.h (the CUDA handlers
// put the stream and the scratch allocator first).
#pragma once

#include "xla/ffi/api/ffi.h"

// xy, scale, rotation, opacity_logit, color_logit, template, mask, rgb.
#define DB_FFI_SCENE_ARGS(DT)                            \
  .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*xy*/            \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*scale*/     \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*rotation*/  \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*opacity*/   \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*color*/     \
      .Arg<xla::ffi::Buffer<xla::ffi::S32>>() /*template*/  \
      .Arg<xla::ffi::Buffer<DT>>() /*mask*/                 \
      .Arg<xla::ffi::Buffer<DT>>() /*rgb*/

#define DB_FFI_FORWARD_REST                                      \
  .Attr<float>("color_blend")                                    \
      .Attr<float>("alpha_max")                                  \
      .Attr<int32_t>("use_rgb")                                  \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*color*/          \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*transmittance*/  \
      .Ret<xla::ffi::Buffer<xla::ffi::S32>>() /*stop*/          \
      .Ret<xla::ffi::Buffer<xla::ffi::U8>>() /*tile lists*/

#define DB_FFI_BACKWARD_REST                                   \
  .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*transmittance*/     \
      .Arg<xla::ffi::Buffer<xla::ffi::S32>>() /*stop*/          \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*d_color*/       \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*d_trans*/       \
      .Arg<xla::ffi::Buffer<xla::ffi::U8>>() /*tile lists*/     \
      .Attr<float>("color_blend")                               \
      .Attr<float>("alpha_max")                                 \
      .Attr<int32_t>("use_rgb")                                 \
      .Attr<int32_t>("atlas_grad")                              \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_xy*/          \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_scale*/       \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_rotation*/    \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_opacity*/     \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_color*/       \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_mask*/        \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_rgb*/

// target, background and the attributes of both folded-loss targets.
#define DB_FFI_LOSS_ARGS                                          \
  .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*target*/              \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>() /*background*/      \
      .Attr<float>("color_blend")                                 \
      .Attr<float>("alpha_max")                                   \
      .Attr<int32_t>("use_rgb")                                   \
      .Attr<float>("grad_scale")

#define DB_FFI_FORWARD_LOSS_REST                                  \
  DB_FFI_LOSS_ARGS                                                \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_color*/         \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*transmittance*/   \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_trans*/         \
      .Ret<xla::ffi::Buffer<xla::ffi::S32>>() /*stop*/            \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*sq_error*/        \
      .Ret<xla::ffi::Buffer<xla::ffi::U8>>() /*tile lists*/

#define DB_FFI_MSE_GRAD_REST                                      \
  DB_FFI_LOSS_ARGS                                                \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_xy*/            \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_scale*/         \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_rotation*/      \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_opacity*/       \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*d_color*/         \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>() /*sq_error*/
