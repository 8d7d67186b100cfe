# XGrammar's C++ core (constrained decoding, sampling/grammar.*) as a static library, built from
# the pinned PyPI sdist that scripts/fetch_xgrammar.sh unpacks into third_party/xgrammar/. Its own
# CMakeLists is not used: it adds -Werror and -flto for its Python wheel; here it is plain C++17,
# no Python bindings, with the dlpack and picojson headers the sdist carries in 3rdparty/.
set(XGRAMMAR_DIR ${PROJECT_SOURCE_DIR}/third_party/xgrammar)
if(NOT EXISTS ${XGRAMMAR_DIR}/include/xgrammar/xgrammar.h)
  message(FATAL_ERROR "XGrammar sources not found in ${XGRAMMAR_DIR}: run "
                      "scripts/fetch_xgrammar.sh (scripts/install_deps.sh runs it)")
endif()
file(GLOB XGRAMMAR_SOURCES CONFIGURE_DEPENDS ${XGRAMMAR_DIR}/cpp/*.cc
     ${XGRAMMAR_DIR}/cpp/support/*.cc ${XGRAMMAR_DIR}/cpp/converter_ext/*.cc)
add_library(xgrammar STATIC ${XGRAMMAR_SOURCES})
set_target_properties(xgrammar PROPERTIES CXX_STANDARD 17 POSITION_INDEPENDENT_CODE ON)
target_include_directories(xgrammar PUBLIC ${XGRAMMAR_DIR}/include)
target_include_directories(xgrammar SYSTEM PUBLIC ${XGRAMMAR_DIR}/3rdparty/dlpack/include
                                                  ${XGRAMMAR_DIR}/3rdparty/picojson)
target_compile_definitions(xgrammar PUBLIC XGRAMMAR_ENABLE_CPPTRACE=0)
# -w: third-party warnings are not ours to fix. -fno-sanitize=undefined: in the sanitizer builds
# (cmake/sanitizers.cmake) XGrammar gets ASan like our code, but not UBSan, whose reports in a
# third-party library we could only suppress (the Debian libraries are not instrumented either).
target_compile_options(xgrammar PRIVATE -w -fno-sanitize=undefined)
target_link_libraries(xgrammar PRIVATE Threads::Threads)
