// Python module _diffbmp_jax_kernels.cpu: the CPU FFI handlers as capsules.
#include "module.h"

extern "C" XLA_FFI_Error* DiffbmpForwardCpu(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCpu(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpForwardLossCpu(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpMseGradCpu(XLA_FFI_CallFrame*);

NB_MODULE(cpu, m) {
  diffbmp::export_handlers(m, {{"diffbmp_forward", DiffbmpForwardCpu},
                               {"diffbmp_backward", DiffbmpBackwardCpu},
                               {"diffbmp_forward_loss", DiffbmpForwardLossCpu},
                               {"diffbmp_mse_grad", DiffbmpMseGradCpu}});
}
