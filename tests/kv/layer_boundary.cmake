# The pool and kv layers see the budget and link interfaces only (kvpager_budget), never the
# shared-memory registry (kvpager_limits): fails naming each include of another limits header.
# Run: cmake -DSOURCE_DIR=<repo> -P layer_boundary.cmake
cmake_minimum_required(VERSION 3.25)
set(allowed "kvpager/limits/memory_budget.hpp" "kvpager/limits/instance_link.hpp")
file(GLOB_RECURSE files "${SOURCE_DIR}/src/pool/*" "${SOURCE_DIR}/src/kv/*"
     "${SOURCE_DIR}/include/kvpager/pool/*" "${SOURCE_DIR}/include/kvpager/kv/*")
set(bad "")
foreach(file IN LISTS files)
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]kvpager/limits/")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "kvpager/limits/[^\">]+" header "${line}")
    if(NOT header IN_LIST allowed)
      file(RELATIVE_PATH rel "${SOURCE_DIR}" "${file}")
      list(APPEND bad "${rel}: ${header}")
    endif()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n  " text)
  message(FATAL_ERROR "pool/kv include registry headers (link kvpager_limits instead where the "
                      "registry is wired):\n  ${text}")
endif()
list(LENGTH files n)
message(STATUS "pool/kv: ${n} files include only the budget and link interfaces")
