# The results that must be checked are [[nodiscard]]: nodiscard_cases.cpp compiles with every
# result used (CASE=0) and fails to compile, naming nodiscard, for each case that drops one.
# Run: cmake -DCXX=<compiler> -DSOURCE_DIR=<repo> -DCUDA_INCLUDE=<dir> -P nodiscard_check.cmake
cmake_minimum_required(VERSION 3.25)
# -c, not -fsyntax-only: GCC diagnoses a dropped result only once it generates code
set(flags -std=c++20 -c -o /dev/null -Werror=unused-result -I${SOURCE_DIR}/include
          -isystem ${CUDA_INCLUDE})
set(source ${CMAKE_CURRENT_LIST_DIR}/nodiscard_cases.cpp)
set(bad "")
foreach(n RANGE 7)
  execute_process(COMMAND ${CXX} ${flags} -DCASE=${n} ${source}
                  RESULT_VARIABLE rc ERROR_VARIABLE err OUTPUT_QUIET)
  if(n EQUAL 0 AND NOT rc EQUAL 0)
    message(FATAL_ERROR "nodiscard_cases.cpp does not compile with every result used:\n${err}")
  elseif(n GREATER 0 AND (rc EQUAL 0 OR NOT err MATCHES "nodiscard"))
    list(APPEND bad ${n})
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "a dropped result compiles (not [[nodiscard]]): nodiscard_cases.cpp CASE ${bad}")
endif()
message(STATUS "7 dropped results refused, every one naming nodiscard")
