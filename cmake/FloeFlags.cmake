# The one place for compiler flags: every Floe target gets these through floe_flags.
add_library(floe_flags INTERFACE)
target_compile_options(floe_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Wunused -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion -Wformat=2
  -Wimplicit-fallthrough -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 reports impossible overlaps inside std::string at -O3 (GCC bug 105329).
  target_compile_options(floe_flags INTERFACE -Wno-restrict)
endif()
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  target_compile_options(floe_flags INTERFACE -Wthread-safety)
endif()
if(FLOE_WERROR)
  target_compile_options(floe_flags INTERFACE -Werror)
endif()

if(FLOE_SANITIZE)
  string(REPLACE ";" "," _floe_san "${FLOE_SANITIZE}")
  add_compile_options(-fsanitize=${_floe_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_floe_san})
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang" AND "undefined" IN_LIST FLOE_SANITIZE)
    # clang 14 cannot emit UBSan's function-type check for coroutines (the HTTP front end's
    # handlers): "Cannot represent a difference across sections". gcc has no such check.
    add_compile_options(-fno-sanitize=function)
  endif()
endif()

# The fuzz targets live in the ASan+UBSan tree (the asan preset, clang): every library there is
# compiled once, with ASan and with libFuzzer's coverage, and serves both the unit tests and the
# fuzz targets, which link the libraries like any other executable. Outside a fuzz target the
# coverage hooks are the sanitizer runtime's empty ones.
if(FLOE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang" OR NOT "address" IN_LIST FLOE_SANITIZE)
    message(FATAL_ERROR "FLOE_FUZZ needs clang and FLOE_SANITIZE with address: the asan preset")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
