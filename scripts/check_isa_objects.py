#!/usr/bin/env python3
"""Run-time ISA dispatch holds in the built kernels (docs/design.md "CPU kernels").

The files compiled with -mavx2 / -mavx512* / -mamx-* (kernels/cpu/*_avx2.cpp, *_avx512*.cpp,
*_amx.cpp) are only called after cpu_features says the CPU has those instructions. But an inline
function or template they instantiate (a std::vector destructor, std::min, a header helper) is
emitted as a weak symbol in every object that uses it, and the linker keeps one copy: if it keeps
the copy from an AVX-512 object, code that runs on any CPU could execute AVX-512 instructions.
This check disassembles every weak symbol of those objects and fails when one holds a VEX/EVEX
instruction (mnemonic v*), a mask-register (k*) or AMX tile instruction, or ymm/zmm/tmm
registers, naming the symbol, so such a helper is moved out of line or out of the ISA file.

Scratch buffers of those files therefore never use std::vector (whose resize / assign, built
out of line by sanitizer builds, held VEX moves): they grow through kernels/cpu/scratch_buffer.h,
compiled for the baseline. Every optimized build passes, sanitizers included; at -O0 (Debug,
never shipped) nothing is inlined and std::min<float>, std::sqrt(float)... are weak VEX copies,
so tests/CMakeLists.txt registers the check for every build type but Debug.

usage: check_isa_objects.py BUILD_DIR
"""
import glob
import os
import re
import subprocess
import sys

ISA_OBJECT = re.compile(r"_(avx2|avx512|avx512bf16|amx)\.cpp\.o$")
# Instructions outside x86-64's baseline (SSE2): VEX/EVEX encodings start with v, mask ops with
# k, AMX's are tile*/tdp*/ldtilecfg/sttilecfg.
OUTSIDE_BASELINE = re.compile(
    r"^\s*[0-9a-f]+:\s+(v\w+|k\w+|tile\w+|tdp\w+|ldtilecfg|sttilecfg)\b|%[yzt]mm")


def weak_symbols(obj):
    out = subprocess.run(["nm", "--defined-only", obj], capture_output=True, text=True,
                         check=True).stdout
    return sorted({f[2] for f in (line.split() for line in out.splitlines())
                   if len(f) == 3 and f[1] in "WV"})


def main():
    if len(sys.argv) != 2:
        print("usage: check_isa_objects.py BUILD_DIR", file=sys.stderr)
        return 2
    objects = [o for o in glob.glob(os.path.join(sys.argv[1], "**", "*.o"), recursive=True)
               if "kernels.dir" in o and ISA_OBJECT.search(o)]
    if not objects:
        print("check_isa_objects: no ISA objects under %s (build the kernels first)" % sys.argv[1],
              file=sys.stderr)
        return 1
    bad = []
    for obj in sorted(objects):
        for sym in weak_symbols(obj):
            listing = subprocess.run(
                ["objdump", "-d", "--no-show-raw-insn", "--disassemble=" + sym, obj],
                capture_output=True, text=True, check=True).stdout
            hits = [l.strip() for l in listing.splitlines() if OUTSIDE_BASELINE.search(l)]
            if hits:
                bad.append("%s: weak symbol %s holds %s" % (os.path.basename(obj), sym, hits[0]))
    for line in bad:
        print(line)
    if bad:
        print("check_isa_objects: %d shared (weak) symbols of ISA-specific objects use "
              "instructions a CPU without that ISA lacks" % len(bad))
        return 1
    print("check_isa_objects: %d ISA objects, no weak symbol outside the x86-64 baseline"
          % len(objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
