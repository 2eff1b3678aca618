# Helpers, one per kind of target, so every module is declared the same way.
#
#   floe_library(<module> SOURCES ... DEPS ...)     -> target floe_<module>
#   floe_test(<name> SOURCES ... DEPS ... LABELS ... [TIMEOUT s] [TSAN_SKIP cases]
#             [ASAN_SKIP cases])
#   floe_bench(<name> SOURCES ... DEPS ...)
#   floe_fuzz(<name> SOURCES ... DEPS ...)

function(floe_library module)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(floe_${module} ${ARG_SOURCES})
  target_include_directories(floe_${module} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(floe_${module} PUBLIC ${ARG_DEPS} PRIVATE floe_flags)
endfunction()

function(floe_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS;TSAN_SKIP;ASAN_SKIP" ${ARGN})
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
  # PROCESSORS 2: a unit test keeps both cores of a CI machine busy (in-process clusters, the
  # parallel parse and map/reduce), while an end-to-end test mostly waits on sockets (the e2e
  # label used 43% of the two cores it was given). tools/test.sh runs ctest with twice the
  # cores, so two unit tests run at once, as before, and the e2e files fill the waits.
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT} PROCESSORS 2)
  # TSAN_SKIP and ASAN_SKIP name gtest cases (Suite.Case, wildcards allowed) that the tsan or
  # the asan preset leaves out: the slowest scenarios of a long test, which repeat the code paths
  # of the cases that still run there (each such list says what covers it). The release run
  # runs every case, and a new case runs under the sanitizers unless it is listed.
  if("thread" IN_LIST FLOE_SANITIZE)
    set(_skip ${ARG_TSAN_SKIP})
  elseif("address" IN_LIST FLOE_SANITIZE)
    set(_skip ${ARG_ASAN_SKIP})
  else()
    set(_skip "")
  endif()
  if(_skip)
    list(JOIN _skip ":" _skip)
    set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT "GTEST_FILTER=-${_skip}")
  endif()
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
