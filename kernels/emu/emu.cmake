# The SIMT emulation build of kernels/*.cu (included by CMakeLists.txt when POINTINS_EMU is ON).
# Each .cu is rewritten (rewrite.cmake) and compiled as C++ against kernels/emu/include, linked with
# the scheduler (runtime.cpp) into pointins_kernels_emu; kernels/tests/emu/*.cpp test every kernel
# through its C launcher. POINTINS_EMU_SANITIZE: thread -> TSan, address -> ASan + UBSan.
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)  # tools/emu_mutants.py recompiles single files with these flags
set(emu_dir ${CMAKE_CURRENT_BINARY_DIR}/emu)
set(emu_sources)
foreach(cu ${POINTINS_KERNEL_SOURCES})
  get_filename_component(stem ${cu} NAME_WE)
  set(out ${emu_dir}/${stem}.emu.cpp)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DIN=${cu} -DOUT=${out} -P ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/rewrite.cmake
    DEPENDS ${cu} ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/rewrite.cmake
    COMMENT "emulation: rewriting kernels/${stem}.cu")
  list(APPEND emu_sources ${out})
endforeach()

set(emu_san_compile)
set(emu_san_link)
set(emu_runtime_defs)
set(emu_env)
if(POINTINS_EMU_SANITIZE STREQUAL "thread")
  set(emu_san_compile -fsanitize=thread)
  set(emu_san_link -fsanitize=thread)
  set(emu_runtime_defs PI_EMU_TSAN=1)
  # Sanitized runs take the quick pair of schedules (one block at a time in order; two workers,
  # shuffled, with preemption): TSan makes every barrier and fiber switch far slower.
  set(emu_env "TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:history_size=4"
              "POINTINS_EMU_SCHEDULES=quick")
elseif(POINTINS_EMU_SANITIZE STREQUAL "address")
  set(emu_san_compile -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  set(emu_san_link -fsanitize=address,undefined)
  set(emu_runtime_defs PI_EMU_ASAN=1)
  set(emu_env "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
              "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1" "POINTINS_EMU_SCHEDULES=quick")
elseif(NOT POINTINS_EMU_SANITIZE STREQUAL "")
  message(FATAL_ERROR "POINTINS_EMU_SANITIZE must be thread, address or empty, not '${POINTINS_EMU_SANITIZE}'")
endif()

set(emu_common -O1 -g -ffp-contract=off -Wall -Wextra -Wno-unknown-pragmas -Wno-unused-function)

# The scheduler: never TSan-instrumented (its bookkeeping is shared by a block's fibers by design;
# it annotates the ordering a GPU guarantees instead). ASan-instrumented in the address build.
add_library(pointins_emu_runtime STATIC ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/runtime.cpp)
target_include_directories(pointins_emu_runtime PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/include)
target_compile_definitions(pointins_emu_runtime PRIVATE ${emu_runtime_defs})
target_compile_options(pointins_emu_runtime PRIVATE ${emu_common})
if(POINTINS_EMU_SANITIZE STREQUAL "address")
  target_compile_options(pointins_emu_runtime PRIVATE ${emu_san_compile})
endif()
find_package(Threads REQUIRED)
target_link_libraries(pointins_emu_runtime PUBLIC Threads::Threads)

add_library(pointins_kernels_emu STATIC ${emu_sources})
target_include_directories(pointins_kernels_emu
  PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/include ${CMAKE_CURRENT_SOURCE_DIR}/kernels/include
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/kernels)
target_compile_options(pointins_kernels_emu PRIVATE ${emu_common} ${emu_san_compile})
if(POINTINS_EMU_COVERAGE)
  # -O0: line counts then map one to one onto the source lines.
  target_compile_options(pointins_kernels_emu PRIVATE -O0 --coverage -fprofile-update=atomic)
  target_link_options(pointins_kernels_emu INTERFACE --coverage)
endif()
target_link_libraries(pointins_kernels_emu PUBLIC pointins_emu_runtime)
target_link_options(pointins_kernels_emu INTERFACE ${emu_san_link})

file(GLOB emu_test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/tests/emu/*.cpp)
add_executable(pointins_emu_tests ${emu_test_sources})
target_compile_options(pointins_emu_tests PRIVATE ${emu_common} ${emu_san_compile})
target_link_libraries(pointins_emu_tests PRIVATE pointins_kernels_emu)

foreach(family runtime keys hash serialize segment kmeans components)
  add_test(NAME emu_${family} COMMAND pointins_emu_tests ${family})
  if(emu_env)
    set_tests_properties(emu_${family} PROPERTIES ENVIRONMENT "${emu_env}")
  endif()
endforeach()

# A reproduction driver: one op on inputs dumped from a failing GPU run (see repro_example.cpp).
set(POINTINS_EMU_REPRO "${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/repro_example.cpp" CACHE FILEPATH
    "C++ file with a main() that calls kernels/ launchers, built as pointins_emu_repro")
add_executable(pointins_emu_repro ${POINTINS_EMU_REPRO})
target_compile_options(pointins_emu_repro PRIVATE ${emu_common} ${emu_san_compile})
target_link_libraries(pointins_emu_repro PRIVATE pointins_kernels_emu)
add_test(NAME emu_repro_example
         COMMAND ${CMAKE_COMMAND} -DREPRO=$<TARGET_FILE:pointins_emu_repro> -DWORK=${CMAKE_CURRENT_BINARY_DIR}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/kernels/emu/repro_test.cmake)
if(emu_env)
  set_tests_properties(emu_repro_example PROPERTIES ENVIRONMENT "${emu_env}")
endif()
