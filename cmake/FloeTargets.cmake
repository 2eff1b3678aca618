# Helpers, one per kind of target, so every module is declared the same way.
#
#   floe_library(<module> SOURCES ... DEPS ...)     -> target floe_<module>
#   floe_test(<name> SOURCES ... DEPS ... LABELS ...)
#   floe_bench(<name> SOURCES ... DEPS ...)
#   floe_fuzz(<name> SOURCES ... DEPS ...)

function(floe_library module)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(floe_${module} ${ARG_SOURCES})
  target_include_directories(floe_${module} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(floe_${module} PUBLIC ${ARG_DEPS} PRIVATE floe_flags)
endfunction()

function(floe_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} floe_testing GTest::gmock GTest::gtest_main floe_flags
    floe_malloc)
  # A test's own sources are mostly gtest bodies: optimizing them fully costs much of the
  # tree's compile time and speeds up little, as the work runs in the libraries (server_test.cc
  # took 21 s at -O3 and 13 s at -O1 with gcc). The release preset sets -O1; the libraries keep
  # the tree's own level. Not -O0 under ASan: 12 s against 35 s to compile server_test.cc, but
  # table_test then ran past its 120 s timeout (83 s at -O1) and parse_test and mr_test took
  # twice as long.
  if(FLOE_TEST_OPTIMIZE)
    target_compile_options(${name} PRIVATE ${FLOE_TEST_OPTIMIZE})
  endif()
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

function(floe_bench name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark floe_flags floe_malloc)
endfunction()

function(floe_fuzz name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} floe_flags floe_malloc)
endfunction()
