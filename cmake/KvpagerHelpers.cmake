# kvpager_add_library(NAME SOURCES... DEPS...): a layer library with the public include dir
# (include/ here; <prefix>/include once installed). kvpager_kv is also kvpager::kv, the name
# it has in the installed package (cmake/KvpagerInstall.cmake).
function(kvpager_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                            $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  string(REGEX REPLACE "^kvpager_" "" short "${name}")
  set_target_properties(${name} PROPERTIES EXPORT_NAME ${short})
  add_library(kvpager::${short} ALIAS ${name})
endfunction()

# kvpager_add_test(NAME [BINARY] SOURCES... DEPS... LABELS...): a GoogleTest binary registered
# with CTest. Labels: unit (ASan+UBSan run), concurrency (TSan run), gpu (needs a CUDA device;
# skips with a message otherwise), multiprocess; besides, for tests that are no GoogleTest
# binary: script (runs the project's scripts), static (compiles, runs nothing).
# BINARY: the test runs the kvpager binary (KVPAGER_BINARY), which is then built with it and in
# its REQUIRED_FILES, so that a build of one label's tests (scripts/label_targets.py) has it.
function(kvpager_add_test name)
  cmake_parse_arguments(ARG "BINARY" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                       ENVIRONMENT "KVPAGER_BINARY=$<TARGET_FILE:kvpager>;KVPAGER_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
                       SKIP_RETURN_CODE 77)
  if(ARG_BINARY)
    add_dependencies(${name} kvpager)
    set_tests_properties(${name} PROPERTIES REQUIRED_FILES $<TARGET_FILE:kvpager>)
  endif()
endfunction()
