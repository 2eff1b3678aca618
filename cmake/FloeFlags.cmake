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
endif()
