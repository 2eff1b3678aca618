# Fails when docs/commands.md differs from `floe commands` (run: floe commands > docs/commands.md).
execute_process(COMMAND ${FLOE} commands OUTPUT_VARIABLE generated RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "floe commands failed (${rc})")
endif()
file(READ ${DOC} current)
if(NOT generated STREQUAL current)
  message(FATAL_ERROR "docs/commands.md is stale: regenerate it with\n  build/release/app/floe commands > docs/commands.md")
endif()
