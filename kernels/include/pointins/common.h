/*
 * PointINS kernels: definitions shared by the CUDA kernels (kernels/ *.cu files), the CPU
 * implementations (csrc/cpu) and standalone C/C++ users.  Plain C, no framework headers.
 */
#ifndef POINTINS_COMMON_H_
#define POINTINS_COMMON_H_

/* Host+device inline qualifier: device code under nvcc, plain inline for a host compiler. */
#if defined(__CUDACC__)
#define PI_HD __host__ __device__ __forceinline__
#else
#define PI_HD static inline
#endif

/*
 * Error flags.  Kernels never abort: they OR these bits into a caller-provided int32 so the
 * caller can raise one clear error after the launch (see csrc/ for the messages).
 */
enum pointins_flag {
  POINTINS_FLAG_NONFINITE = 1,    /* NaN or Inf in a floating input                        */
  POINTINS_FLAG_OVERFLOW = 2,     /* a value does not fit the output integer / key bits      */
  POINTINS_FLAG_NEGATIVE = 4,     /* a negative grid coordinate where only >= 0 is encodable */
  POINTINS_FLAG_BATCH_RANGE = 8,  /* batch index negative or too large for the key layout   */
  POINTINS_FLAG_BAD_OFFSETS = 16, /* CSR offsets not starting at 0 / decreasing / wrong end */
  POINTINS_FLAG_BAD_KEY = 32,     /* a key that no pack_keys call can produce (negative)    */
  POINTINS_FLAG_INDEX_RANGE = 64  /* an index >= its bound (segment id >= num_segments ...)  */
};

/* Element types of the dtype-generic launchers (segment reductions, K-means). */
enum pointins_dtype { POINTINS_F32 = 0, POINTINS_F64 = 1, POINTINS_F16 = 2, POINTINS_BF16 = 3 };

/* Largest |floor(coord / grid_size)| accepted by grid_coord: differences stay in int32. */
#define POINTINS_GRID_LIMIT (1 << 30)

/* Key layout: bits per axis in [POINTINS_MIN_KEY_BITS, POINTINS_MAX_KEY_BITS]. */
#define POINTINS_MIN_KEY_BITS 1
#define POINTINS_MAX_KEY_BITS 21
#define POINTINS_DEFAULT_KEY_BITS 16

/* Serialization orders (pointins/serialize.h) and limits. */
#define POINTINS_ORDER_Z 0
#define POINTINS_ORDER_Z_TRANS 1
#define POINTINS_ORDER_HILBERT 2
#define POINTINS_ORDER_HILBERT_TRANS 3
#define POINTINS_MAX_ORDERS 8
#define POINTINS_MAX_DEPTH 21

/* K-means initialisation methods (pointins/kmeans.h). */
#define POINTINS_KMEANS_PLUSPLUS 0
#define POINTINS_KMEANS_RANDOM 1

#endif /* POINTINS_COMMON_H_ */
