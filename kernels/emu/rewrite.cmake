# Turns one kernels/*.cu file into C++ for the SIMT emulator (cmake -DIN=... -DOUT=... -P rewrite.cmake):
#   name<<<grid, block, shared, stream>>>(args)  ->  ::pi_emu::launch_named("name", name, grid, block, shared, stream)(args)
#   extern __shared__ [__align__(n)] T name[];    ->  T* name = static_cast<T*>(::pi_emu::dynamic_shared());
# Lines are kept one for one and a #line directive names the original file, so compiler messages,
# sanitizer reports and gcov line counts point into kernels/*.cu. Fails on any launch it cannot parse.
if(NOT DEFINED IN OR NOT DEFINED OUT)
  message(FATAL_ERROR "usage: cmake -DIN=kernel.cu -DOUT=kernel.emu.cpp -P rewrite.cmake")
endif()
file(READ "${IN}" text)
set(ident "[A-Za-z_][A-Za-z0-9_]*")
# (CMake's regex engine numbers no nested groups here: keep them flat.)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:<>,]*)<<<([^;{}<>]*)>>>"
       "::pi_emu::launch_named(\"\\1\", \\1, \\2)" text "${text}")
string(REGEX REPLACE "extern __shared__ (__align__\\([0-9]+\\) )?([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) (${ident})\\[\\];"
       "\\2* \\3 = static_cast<\\2*>(::pi_emu::dynamic_shared());" text "${text}")
string(FIND "${text}" "<<<" left)
if(NOT left EQUAL -1)
  string(SUBSTRING "${text}" ${left} 120 context)
  message(FATAL_ERROR "${IN}: a kernel launch the emulator rewrite cannot parse: ${context}")
endif()
string(FIND "${text}" "extern __shared__" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "${IN}: an extern __shared__ declaration the emulator rewrite cannot parse")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
