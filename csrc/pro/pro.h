// PRO curve and AUPRO (MVTec AD per-region overlap), raw-pointer kernels for the CPU and CUDA.
//
// Definition (exact, no threshold grid):
//  - ground-truth regions are the 8-connected components of each image's binary mask (union-find);
//    regions never span images;
//  - FPR(t) = #(defect-free pixels with score >= t) / #(defect-free pixels), over all images;
//  - PRO(t) = mean over all regions r of #(pixels of r with score >= t) / |r|;
//  - thresholds are the distinct scores, high to low (one global sort); tied scores form ONE
//    point (the point after all tied pixels are counted); the curve starts at (0, 0, +inf);
//  - AUPRO = trapezoid area of PRO over FPR on [0, fpr_limit], PRO linearly interpolated at exactly
//    fpr_limit, divided by fpr_limit.
// No Python headers here: this file is included by nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EDGEAD_HD __host__ __device__
#else
#define EDGEAD_HD
#endif

namespace edgead {
namespace pro {

enum Status : int {
  kOk = 0,
  kNonFiniteScore = 1,  // bad_index / bad_value: first non-finite score (flat index)
  kBadMask = 2,         // bad_index / bad_value: first mask value not in {0, 1}
  kNoRegions = 3,       // no defect pixel at all: AUPRO undefined
  kNoNormal = 4,        // no defect-free pixel: FPR undefined
  kCapacity = 5,        // curve buffers too small (bad_index = points needed)
  kTooLarge = 6,        // CUDA path: more than 2^31 - 2 pixels
};

struct Result {
  int status = kOk;
  int64_t bad_index = -1;
  double bad_value = 0.0;
  int64_t n_points = 0;   // curve points written, including the (0, 0, +inf) start
  double aupro = 0.0;
  int64_t n_regions = 0;
  int64_t n_normal = 0;
};

// Area of the segment (f0, p0) -> (f1, p1) (f0 <= f1) inside [0, limit], with PRO linearly
// interpolated at limit when the segment crosses it. Summed over the curve, divided by limit = AUPRO.
EDGEAD_HD inline double segment_area(double f0, double p0, double f1, double p1, double limit) {
  if (f0 >= limit || f1 <= f0) return 0.0;
  if (f1 <= limit) return 0.5 * (f1 - f0) * (p0 + p1);
  double pl = p0 + (p1 - p0) * ((limit - f0) / (f1 - f0));
  return 0.5 * (limit - f0) * (p0 + pl);
}

// scores: n*h*w float32 (is_f64 = false) or float64, C-contiguous. masks: n*h*w bytes in {0, 1}.
// fpr/pro/thr: host buffers of `capacity` doubles, or all null to compute the area only (faster: the
// sweep stops at fpr_limit). Never throws for bad data: reports it in Result::status.
Result pro_curve_cpu(const void* scores, bool is_f64, const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                     double fpr_limit, double* fpr, double* pro, double* thr, int64_t capacity);

#ifdef EDGEAD_WITH_CUDA
// Same on device arrays (scores, masks on the current device), on `stream`. The curve is written to
// HOST buffers fpr/pro/thr (or skipped when null); the stream is synchronised before returning.
// Throws std::runtime_error on CUDA errors.
Result pro_curve_cuda(const void* scores, bool is_f64, const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                      double fpr_limit, double* fpr, double* pro, double* thr, int64_t capacity,
                      std::uintptr_t stream);
#endif

}  // namespace pro
}  // namespace edgead
