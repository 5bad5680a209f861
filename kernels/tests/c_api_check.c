/* Compiled as C: proves pointins_kernels.h is a valid C header and that every declared launcher
 * links.  Never run in CI (it would need a GPU); when run on a GPU machine it packs four keys. */
#include <stdio.h>

#include "pointins/pointins_kernels.h"

int main(void) {
  const int32_t host_grid[12] = {0, 0, 0, 1, 2, 3, 65535, 0, 1, 7, 7, 7};
  int32_t *grid = NULL, *flags = NULL;
  int64_t *keys = NULL, host_keys[4] = {0};
  int rc = 0;
  /* Take every launcher's address so a missing definition fails the link. */
  void* launchers[] = {(void*)&pointins_pack_keys_i32, (void*)&pointins_pack_keys_i64,
                       (void*)&pointins_serialize_encode_i32, (void*)&pointins_serialize_encode_i64,
                       (void*)&pointins_serialize_decode, (void*)&pointins_patch_partition,
                       (void*)&pointins_hash_init, (void*)&pointins_hash_insert, (void*)&pointins_hash_query,
                       (void*)&pointins_voxel_mark, (void*)&pointins_voxel_assign, (void*)&pointins_voxel_select,
                       (void*)&pointins_kernel_map,
                       (void*)&pointins_unpack_keys, (void*)&pointins_grid_coord_f32,
                       (void*)&pointins_grid_coord_f64, (void*)&pointins_segment_csr_workspace_size,
                       (void*)&pointins_segment_csr, (void*)&pointins_segment_keys,
                       (void*)&pointins_segment_offsets_from_sorted, (void*)&pointins_kmeans_init,
                       (void*)&pointins_kmeans_assign, (void*)&pointins_kmeans_update, (void*)&pointins_cc_cells,
                       (void*)&pointins_cc_keys, (void*)&pointins_cc_init_parent, (void*)&pointins_cc_link,
                       (void*)&pointins_cc_finalize};
  (void)launchers;
  if (cudaMalloc((void**)&grid, sizeof host_grid) != cudaSuccess ||
      cudaMalloc((void**)&keys, sizeof host_keys) != cudaSuccess ||
      cudaMalloc((void**)&flags, sizeof(int32_t)) != cudaSuccess) {
    printf("no usable CUDA device; nothing run\n");
    return 0;
  }
  cudaMemcpy(grid, host_grid, sizeof host_grid, cudaMemcpyHostToDevice);
  cudaMemset(flags, 0, sizeof(int32_t));
  rc = pointins_pack_keys_i32(grid, NULL, 4, POINTINS_DEFAULT_KEY_BITS, keys, flags, 0);
  cudaMemcpy(host_keys, keys, sizeof host_keys, cudaMemcpyDeviceToHost);
  printf("rc=%d keys=%lld %lld %lld %lld\n", rc, (long long)host_keys[0], (long long)host_keys[1],
         (long long)host_keys[2], (long long)host_keys[3]);
  int ok = rc == 0 && host_keys[1] == ((1LL << 32) | (2LL << 16) | 3LL);

  /* Hash table round trip: insert the 4 keys, query them back plus one absent key. */
  {
    int64_t *tk = NULL, *tv = NULL, *q = NULL, *out = NULL, host_out[5] = {0};
    const int64_t cap = 16;
    int64_t host_q[5];
    for (int i = 0; i < 4; ++i) host_q[i] = host_keys[i];
    host_q[4] = 12345;
    cudaMalloc((void**)&tk, cap * sizeof(int64_t));
    cudaMalloc((void**)&tv, cap * sizeof(int64_t));
    cudaMalloc((void**)&q, sizeof host_q);
    cudaMalloc((void**)&out, sizeof host_out);
    cudaMemcpy(q, host_q, sizeof host_q, cudaMemcpyHostToDevice);
    rc = pointins_hash_init(tk, tv, cap, 0);
    rc |= pointins_hash_insert(q, 4, tk, tv, cap, NULL, flags, 0);
    rc |= pointins_hash_query(tk, tv, cap, q, 5, out, 0);
    cudaMemcpy(host_out, out, sizeof host_out, cudaMemcpyDeviceToHost);
    printf("hash rc=%d lookup=%lld %lld %lld %lld %lld\n", rc, (long long)host_out[0], (long long)host_out[1],
           (long long)host_out[2], (long long)host_out[3], (long long)host_out[4]);
    ok = ok && rc == 0 && host_out[0] == 0 && host_out[1] == 1 && host_out[2] == 2 && host_out[3] == 3 &&
         host_out[4] == -1;
    /* Hilbert order of the 8 cells of a 2x2x2 cube: a bijection onto 0..7 */
    {
      int32_t cube[24];
      int64_t codes[8];
      int seen = 0;
      const int32_t order = POINTINS_ORDER_HILBERT;
      for (int c = 0; c < 8; ++c) {
        cube[3 * c] = (c >> 2) & 1;
        cube[3 * c + 1] = (c >> 1) & 1;
        cube[3 * c + 2] = c & 1;
      }
      int32_t* dcube = NULL;
      int64_t* dcodes = NULL;
      cudaMalloc((void**)&dcube, sizeof cube);
      cudaMalloc((void**)&dcodes, sizeof codes);
      cudaMemcpy(dcube, cube, sizeof cube, cudaMemcpyHostToDevice);
      rc = pointins_serialize_encode_i32(dcube, NULL, 8, 1, &order, 1, dcodes, flags, 0);
      cudaMemcpy(codes, dcodes, sizeof codes, cudaMemcpyDeviceToHost);
      for (int c = 0; c < 8; ++c) seen |= 1 << (int)codes[c];
      printf("hilbert rc=%d cells->codes bijective=%d\n", rc, seen == 0xff);
      ok = ok && rc == 0 && seen == 0xff;
      cudaFree(dcube);
      cudaFree(dcodes);
    }
    cudaFree(tk);
    cudaFree(tv);
    cudaFree(q);
    cudaFree(out);
  }
  /* Segment max over CSR offsets {0, 3, 3, 5}: values, args (lowest index on ties), empty -> 0/-1. */
  {
    const float host_src[5] = {1.f, 4.f, 4.f, -2.f, -1.f};
    const int64_t host_off[4] = {0, 3, 3, 5};
    float host_out[3] = {0}, *src = NULL, *out = NULL;
    int64_t host_arg[3] = {0}, *off = NULL, *arg = NULL;
    cudaMalloc((void**)&src, sizeof host_src);
    cudaMalloc((void**)&off, sizeof host_off);
    cudaMalloc((void**)&out, sizeof host_out);
    cudaMalloc((void**)&arg, sizeof host_arg);
    cudaMemcpy(src, host_src, sizeof host_src, cudaMemcpyHostToDevice);
    cudaMemcpy(off, host_off, sizeof host_off, cudaMemcpyHostToDevice);
    cudaMemset(flags, 0, sizeof(int32_t));
    rc = pointins_segment_csr(POINTINS_F32, src, 5, 1, off, 3, NULL, POINTINS_REDUCE_MAX, 0, out, arg, NULL, NULL,
                              flags, 0);
    cudaMemcpy(host_out, out, sizeof host_out, cudaMemcpyDeviceToHost);
    cudaMemcpy(host_arg, arg, sizeof host_arg, cudaMemcpyDeviceToHost);
    printf("segment max rc=%d out=%g %g %g arg=%lld %lld %lld\n", rc, host_out[0], host_out[1], host_out[2],
           (long long)host_arg[0], (long long)host_arg[1], (long long)host_arg[2]);
    ok = ok && rc == 0 && host_out[0] == 4.f && host_out[1] == 0.f && host_out[2] == -1.f && host_arg[0] == 1 &&
         host_arg[1] == -1 && host_arg[2] == 4;
    cudaFree(src);
    cudaFree(off);
    cudaFree(out);
    cudaFree(arg);
  }
  cudaFree(grid);
  cudaFree(keys);
  cudaFree(flags);
  return ok ? 0 : 1;
}
