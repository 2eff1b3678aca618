# Every dependency is a Debian package listed in tools/install-deps.sh; nothing is downloaded.
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(GTest REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
find_package(CLI11 QUIET)
if(NOT TARGET CLI11::CLI11)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
if(FLOE_BENCH)
  find_package(benchmark REQUIRED)
  find_package(TBB REQUIRED)
  find_package(libcuckoo REQUIRED)
  pkg_check_modules(URCU REQUIRED IMPORTED_TARGET liburcu-memb liburcu-cds)
endif()

# The allocator every Floe executable links (docs/store.md, "Allocator"): values are allocated
# by one thread and often freed by another, which glibc's malloc serializes on arena locks.
add_library(floe_malloc INTERFACE)
if(FLOE_MALLOC STREQUAL "tcmalloc" AND NOT FLOE_SANITIZE)
  pkg_check_modules(TCMALLOC REQUIRED libtcmalloc_minimal)
  target_link_options(floe_malloc INTERFACE
    -Wl,--push-state,--no-as-needed -ltcmalloc_minimal -Wl,--pop-state)
  target_compile_options(floe_malloc INTERFACE
    -fno-builtin-malloc -fno-builtin-calloc -fno-builtin-realloc -fno-builtin-free)
  target_compile_definitions(floe_malloc INTERFACE FLOE_MALLOC_NAME="tcmalloc")
else()
  target_compile_definitions(floe_malloc INTERFACE FLOE_MALLOC_NAME="system")
endif()
