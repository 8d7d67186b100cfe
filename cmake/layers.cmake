# lightserve_library(NAME <target> FOLDER <folder> SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
#
# One library per layer folder. Its only exported include root is a directory in the build tree
# holding one symbolic link, <folder> -> the source folder, so `#include "<folder>/x.h"` resolves
# for this library and for the targets that link it, and for nothing else: an include that
# crosses the layering (memory/ including "model/...") fails to compile. docs/design.md lists
# the layers; scripts/check_layers.py checks the same table over every file, headers included.
function(lightserve_include_root target folder)
  set(root ${PROJECT_BINARY_DIR}/include_roots/${target})
  get_filename_component(parent ${root}/${folder} DIRECTORY)
  file(MAKE_DIRECTORY ${parent})
  if(NOT EXISTS ${root}/${folder})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${folder} ${root}/${folder} SYMBOLIC)
  endif()
  set(${target}_INCLUDE_ROOT ${root} PARENT_SCOPE)
endfunction()

function(lightserve_library)
  cmake_parse_arguments(LIB "" "NAME;FOLDER" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${LIB_NAME} STATIC ${LIB_SOURCES})
  lightserve_include_root(${LIB_NAME} ${LIB_FOLDER})
  target_include_directories(${LIB_NAME} PUBLIC ${${LIB_NAME}_INCLUDE_ROOT})
  target_link_libraries(${LIB_NAME} PUBLIC ${LIB_PUBLIC_DEPS} PRIVATE ${LIB_PRIVATE_DEPS})
  lightserve_warnings(${LIB_NAME})
endfunction()
