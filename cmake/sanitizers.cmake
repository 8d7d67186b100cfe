# Sanitizer builds of the whole tree (scripts/sanitize.sh; docs/reliability.md "Sanitizers").
#
#   -DLIGHTSERVE_SANITIZE=address,undefined   ASan + UBSan (ON means the same)
#   -DLIGHTSERVE_SANITIZE=thread              TSan
#   -DLIGHTSERVE_SANITIZE=OFF                 none (the default)
#   -DLIGHTSERVE_FUZZ=ON (clang)              address,undefined unless set otherwise, plus
#                                             libFuzzer's coverage instrumentation everywhere
#                                             (tests/fuzz/CMakeLists.txt, scripts/fuzz.sh)
#
# The flags go on every C and C++ compile and link below the top CMakeLists.txt (our code, the
# tests and the daemon binary they spawn), not on CUDA: nvcc's device code cannot be instrumented,
# and scripts/sanitize.sh configures these builds with -DLIGHTSERVE_CUDA=OFF anyway (the CUDA
# runtime does not start under ASan's default shadow layout, and the build machines have no GPU).
# Third-party libraries come from Debian packages and stay uninstrumented.
set(LIGHTSERVE_SANITIZE OFF CACHE STRING
  "Sanitizers for the whole build: address,undefined | thread | OFF (ON = address,undefined)")

if(LIGHTSERVE_SANITIZE STREQUAL "ON")
  set(LIGHTSERVE_SANITIZE_LIST address,undefined)
elseif(LIGHTSERVE_SANITIZE)
  set(LIGHTSERVE_SANITIZE_LIST ${LIGHTSERVE_SANITIZE})
elseif(LIGHTSERVE_FUZZ)
  set(LIGHTSERVE_SANITIZE_LIST address,undefined)
else()
  return()
endif()

string(REPLACE "," ";" _ls_sanitizers "${LIGHTSERVE_SANITIZE_LIST}")
foreach(_ls_s IN LISTS _ls_sanitizers)
  if(NOT _ls_s MATCHES "^(address|undefined|thread|leak)$")
    message(FATAL_ERROR "LIGHTSERVE_SANITIZE: unknown sanitizer '${_ls_s}'")
  endif()
endforeach()
if("thread" IN_LIST _ls_sanitizers AND ("address" IN_LIST _ls_sanitizers OR
                                        "leak" IN_LIST _ls_sanitizers))
  message(FATAL_ERROR "LIGHTSERVE_SANITIZE: thread cannot be combined with address or leak")
endif()

set(_ls_sanitize_flags -fsanitize=${LIGHTSERVE_SANITIZE_LIST} -fno-omit-frame-pointer -g1)
if("undefined" IN_LIST _ls_sanitizers)
  # A UBSan report fails the test instead of scrolling past.
  list(APPEND _ls_sanitize_flags -fno-sanitize-recover=undefined)
endif()
if(LIGHTSERVE_FUZZ)
  # Coverage counters in every library, so the fuzz targets see the code they drive; the
  # targets themselves link libFuzzer's main (-fsanitize=fuzzer).
  list(APPEND _ls_sanitize_flags -fsanitize=fuzzer-no-link)
endif()
message(STATUS "lightserve: sanitizers ${LIGHTSERVE_SANITIZE_LIST}")
add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_ls_sanitize_flags}>")
# The runtimes at link time (every executable and shared library; nvcc links none here).
add_link_options(-fsanitize=${LIGHTSERVE_SANITIZE_LIST})
# GCC's flow-based warnings misfire on sanitizer-instrumented code ("sanitizers tend to increase
# the rate of false positive warnings ... We recommend against combining -Werror and [the use of]
# sanitizers", GCC manual, -fsanitize). With ASan at -O3 they hit std::vector growth in the test
# helpers (tests/support/gguf_writer.h: "writing 1 byte into a region of size 0") and Beast's
# parser (boost::optional "may be used uninitialized"). They stay warnings here; the normal build
# keeps them errors.
set(_ls_gcc_false_positives stringop-overflow stringop-overread array-bounds maybe-uninitialized)
list(TRANSFORM _ls_gcc_false_positives PREPEND -Wno-error=)
add_compile_options("$<$<COMPILE_LANG_AND_ID:CXX,GNU>:${_ls_gcc_false_positives}>")
# clang under -Werror: the kernels silence GCC-only warnings by name (#pragma GCC diagnostic
# ignored "-Wmaybe-uninitialized"), which clang calls unknown; and ASan's checks on every load and
# store keep the vectorizer from honouring the kernels' loop hints ("loop not vectorized").
add_compile_options(
  "$<$<COMPILE_LANG_AND_ID:CXX,Clang>:-Wno-unknown-warning-option;-Wno-pass-failed>")
# GCC warns that TSan does not model std::atomic_thread_fence (-Wtsan), which Asio's completion
# handlers use (boost/asio/detail/std_fenced_block.hpp); their ordering comes from the
# io_context's mutexes as well, which TSan does see. A warning, not an error, in the TSan build.
if("thread" IN_LIST _ls_sanitizers)
  add_compile_options("$<$<COMPILE_LANG_AND_ID:CXX,GNU>:-Wno-error=tsan;-Wno-tsan>")
endif()
