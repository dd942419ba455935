// Python module _diffbmp_jax_kernels.cuda: the CUDA FFI handlers as capsules.
// "diffbmp_forward"/"diffbmp_backward" take an fp32 atlas (the contract of
// render_common.h); the "_bf16" pair takes mask and rgb as bf16 buffers.
// `workspace_bytes(primitives, tiles, pairs)` sizes the workspace result each
// call ends with (workspace.h), for the Python lowering.
#include <cstdint>

#include "module.h"
#include "workspace.h"

extern "C" XLA_FFI_Error* DiffbmpForwardCuda(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCuda(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpForwardCudaBf16(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCudaBf16(XLA_FFI_CallFrame*);

NB_MODULE(cuda, m) {
  diffbmp::export_handlers(m, {{"diffbmp_forward", DiffbmpForwardCuda},
                               {"diffbmp_backward", DiffbmpBackwardCuda},
                               {"diffbmp_forward_bf16", DiffbmpForwardCudaBf16},
                               {"diffbmp_backward_bf16", DiffbmpBackwardCudaBf16}});
  m.def(
      "workspace_bytes",
      [](int64_t primitives, int64_t tiles, int64_t pairs) {
        return diffbmp::workspace_layout(primitives, tiles, pairs).bytes;
      },
      nanobind::arg("primitives"), nanobind::arg("tiles"), nanobind::arg("pairs"),
      "Bytes of the workspace of one call over `primitives` primitives and `tiles` tiles of all "
      "scenes, with room for `pairs` (tile, primitive) pairs.");
}
