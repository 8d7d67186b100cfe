#!/usr/bin/env python3
"""Side-by-side table of lightserve's runtime_bench JSON and llama.cpp's bench_llamacpp.sh JSON.

    python3 scripts/bench_compare.py OURS.json LLAMACPP.json
Prints a markdown table with the ratio lightserve / llama.cpp for each row.
"""
import json
import sys


def main() -> int:
    ours = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2]))
    by_test = {r["test"]: r["tokens_per_second"] for r in ours["results"]}
    r = ref["results"]
    rows = []
    for n in ("512", "2048"):
        if f"prefill {n}" in by_test and n in r["prefill"]:
            rows.append((f"prefill {n} tokens", by_test[f"prefill {n}"], r["prefill"][n]["tokens_per_s"],
                         "llama-bench pp" + n))
    for b in ("1", "8", "32"):
        if f"decode batch {b}" in by_test and b in r["decode_batched"]:
            rows.append((f"decode batch {b} (128-token prompts, 128 generated each)", by_test[f"decode batch {b}"],
                         r["decode_batched"][b]["aggregate_tokens_per_s"], "llama-batched-bench S_TG npl=" + b))
    if "decode batch 1" in by_test and "1" in r["decode"]:
        rows.append(("decode batch 1 vs llama-bench tg128 (empty context)", by_test["decode batch 1"],
                     r["decode"]["1"]["tokens_per_s"], "llama-bench tg128"))
    print("| test | lightserve tokens/s | llama.cpp tokens/s | ratio | llama.cpp measure |")
    print("|---|---:|---:|---:|---|")
    for name, a, b, how in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {how} |")
    rss = ref.get("peak_rss_kib", {})
    print()
    print(f"| resident memory | lightserve | llama.cpp |")
    print("|---|---:|---:|")
    print(f"| after load | {ours['rss_after_load_kib'] / 1024:.0f} MiB | |")
    print(f"| peak over the whole bench | {ours['peak_rss_kib'] / 1024:.0f} MiB | "
          f"prefill {rss.get('prefill', 0) / 1024:.0f} MiB, decode {rss.get('decode', 0) / 1024:.0f} MiB, "
          f"batched {rss.get('batched', 0) / 1024:.0f} MiB |")
    print()
    print(f"lightserve backend: {ours['backend']}")
    print(f"llama.cpp: {'; '.join(ref['llama_cpp_version'])}; threads {ref['threads']}, repack {ref['repack']}, "
          f"flash_attn {ref['flash_attn']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
