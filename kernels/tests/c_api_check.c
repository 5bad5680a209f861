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
                       (void*)&pointins_grid_coord_f64};
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
  cudaFree(grid);
  cudaFree(keys);
  cudaFree(flags);
  return rc == 0 && host_keys[1] == ((1LL << 32) | (2LL << 16) | 3LL) ? 0 : 1;
}
