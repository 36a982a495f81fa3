# `cmake --install`: the kvpager command and the model catalogue; for C++ users the layer
# libraries, their public headers and the CMake package, so that after
#   cmake --install build --prefix P
# a project finds them with find_package(kvpager) (CMAKE_PREFIX_PATH=P) and links
# kvpager::common, vmm, budget, limits, pool, kv, model, batch, tp (static libraries; linking one
# brings the layers below it). tests/cmake_consumer is such a project (scripts/cmake_consumer_test.sh).
# Not installed: the transfer benchmark engine (src/bench/transfer), a part of the command.
include(CMakePackageConfigHelpers)

set(kvpager_package_dir "${CMAKE_INSTALL_LIBDIR}/cmake/kvpager")
set(kvpager_installed_libraries)
foreach(layer common vmm budget limits pool kv model batch tp)
  if(TARGET kvpager_${layer})
    list(APPEND kvpager_installed_libraries kvpager_${layer})
  endif()
endforeach()
install(TARGETS ${kvpager_installed_libraries} EXPORT kvpagerTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT devel)
install(DIRECTORY include/kvpager DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT devel
        PATTERN bench EXCLUDE)
install(EXPORT kvpagerTargets NAMESPACE kvpager:: DESTINATION "${kvpager_package_dir}"
        COMPONENT devel)
configure_package_config_file(cmake/kvpagerConfig.cmake.in
                              "${PROJECT_BINARY_DIR}/kvpagerConfig.cmake"
                              INSTALL_DESTINATION "${kvpager_package_dir}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/kvpagerConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/kvpagerConfig.cmake"
              "${PROJECT_BINARY_DIR}/kvpagerConfigVersion.cmake"
        DESTINATION "${kvpager_package_dir}" COMPONENT devel)

install(TARGETS kvpager RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(DIRECTORY models/ DESTINATION "${CMAKE_INSTALL_DATADIR}/kvpager/models")
