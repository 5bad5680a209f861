# ctest: the repro driver (repro_example.cpp) on a small text cloud, and its usage error.
set(data "${WORK}/repro_coord.txt")
# 8 points; (0.1, 0, 0) shares the 0.5 m voxel of (0, 0, 0) and (4, 0, 0) is given twice: 6 voxels.
file(WRITE "${data}" "0 0 0\n1 0 0\n2 0 0\n3 0 0\n0.1 0 0\n4 0 0\n0 2 0\n4 0 0\n")
execute_process(COMMAND "${REPRO}" "${data}" 0.5 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "voxelize: 6 voxels")
  message(FATAL_ERROR "repro example: exit ${rc}, expected 6 voxels")
endif()
execute_process(COMMAND "${REPRO}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "repro example without arguments: exit ${rc}, expected 2")
endif()
