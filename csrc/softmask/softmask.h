// FADeR soft mask applied to a skip feature map, raw-pointer kernels.
//   mask[b] = 1 - (P[b] - min P[b]) / (max P[b] - min P[b])   (all ones when max == min)
//   out[b, ch, Y, X] = F[b, ch, Y, X] * mask[b, iy(Y), ix(X)]
//   iy(Y) = min(floor(Y * (float(h) / float(Hs))), h - 1)      (torch F.interpolate 'nearest')
// Arithmetic in float32; fp16 features are rounded once when stored.
#pragma once

#include <cstdint>

namespace edgead {

// pred: (B, h, w) float32 or fp16 bits (pred_half); features/out: (B, C, Hs, Ws) float32 or fp16 bits
// (feat_half), contiguous. out may alias features. Returns -1 when all predictions are finite,
// otherwise the index of an image whose predictions hold a NaN/Inf (out is then not written).
int64_t softmask_cpu(const void* pred, bool pred_half, const void* features, bool feat_half, void* out, int64_t B,
                     int64_t h, int64_t w, int64_t C, int64_t Hs, int64_t Ws);

#ifdef EDGEAD_WITH_CUDA
// Same on the GPU in one kernel, enqueued on `stream`; same return value (the lowest image index with a
// NaN/Inf prediction, whose out is not written), read back with a stream sync. Inside CUDA graph capture
// predictions are not scanned (returns -1, no sync; NaN propagates).
int64_t softmask_cuda(const void* pred, bool pred_half, const void* features, bool feat_half, void* out, int64_t B,
                      int64_t h, int64_t w, int64_t C, int64_t Hs, int64_t Ws, std::uintptr_t stream);
#endif

}  // namespace edgead
