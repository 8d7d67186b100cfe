#!/usr/bin/env python3
"""Tables of scripts/gpu_check.sh's measurements, as markdown (docs/benchmarks.md, "8B shape on a
GPU"). Reads what the check wrote into OUT_DIR and prints, for whatever is there:

- the decode roofline: per batch, the decode step time of `runtime_bench` (plain model, every
  sequence decoding at once; the forward pass with its logits download, and the whole step with
  the host's argmax) against the time to move the bytes a step reads (resident weights +
  the KV of every sequence at its mean decode context) at the measured copy bandwidth
  (copy_bandwidth: bytes read + written per second, the rate the memory sustains);
- hybrid (f = 0.5) over full attention with the KV arena filling the GPU, from one
  `lightserve bench --compare` run per input length;
- decode attention's KV read rate at the 8B shape (attention_bench's own table, as printed)
  next to the copy bandwidth;
- the decode paths A/B (runtime_bench --fusion off,on --argmax host,device): per batch, the step
  time of each path, old (fusion off, logits to the host) over each;
- llama.cpp's CUDA build against us (issue 12's must-show): per batch, decode tokens/s of
  llama-batched-bench (its S_TG, jsonl lines in llamacpp.txt) and of runtime_bench's step 4 row at
  the same batch (the new path: fusion on + device argmax when measured), with the ratio and the
  target (at least 1.0x at batch 1, 1.5x at batch 32);
- CUDA graphs of the decode step A/B (runtime_bench --graphs off,on): ms per step off / on;
- the load tester against the daemon (step 7): bench_serving.sh's table, full vs hybrid.

    python3 scripts/gpu_tables.py OUT_DIR
Standard library only (runs with the device machine's python3).
"""
import glob
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def kv_bytes_per_token(model):
    # K and V, every layer, 2 bytes per value (f16 and bf16 alike).
    return 2 * model["num_layers"] * model["num_kv_heads"] * model["head_dim"] * 2


def path_of(result):
    # Rows written before --fusion/--argmax existed, or without --fusion (null), ran the
    # backend's default: fusion on (unless LIGHTSERVE_CUDA_FUSED=0), host argmax.
    fusion = result.get("fusion")
    if fusion is None:
        fusion = True
    argmax = result.get("argmax", "host")
    return fusion, argmax


def path_name(fusion, argmax):
    return f"fusion {'on' if fusion else 'off'}, argmax {argmax}"


def roofline(out_dir, copy):
    rows = []
    for path in glob.glob(os.path.join(out_dir, "decode_*.json")):
        bench = load(path)
        if not bench:
            continue
        for result in bench.get("results", []):
            if "batch" not in result:
                continue
            fusion, argmax = path_of(result)
            # The old path and the new one (other mixes: the A/B table).
            if (fusion, argmax) not in ((False, "host"), (True, "device"), (True, "host")):
                continue
            if (fusion, argmax) == (True, "host") and any(
                    path_of(r) == (True, "device") for r in bench["results"]):
                continue
            batch = result["batch"]
            # Mean context a decode step attends: the prompt plus half the generated tokens.
            context = bench["decode_context"] + bench["gen"] / 2
            weights = bench["weight_resident_bytes"]
            kv = batch * context * kv_bytes_per_token(bench)
            bound_ms = 1e3 * (weights + kv) / (copy["copy_gb_per_s"] * 1e9)
            measured = result["ms_per_step"]
            forward = result.get("forward_ms_per_step", measured)
            # With the device argmax the step has no host work: the whole step is the measure.
            timed = measured if argmax == "device" else forward
            rows.append((batch, bench["decode_context"], bench["kv_dtype"],
                         path_name(fusion, argmax), weights / 2**30, kv / 2**30, bound_ms,
                         measured, timed, bound_ms / timed, result["tokens_per_second"]))
    if not rows:
        return
    rows.sort()
    print(f"Decode step against the HBM roofline ({copy['device']}; copy bandwidth "
          f"{copy['copy_gb_per_s']:.0f} GB/s read + written, read-only {copy['read_gb_per_s']:.0f}"
          " GB/s; roofline = (resident weights + KV read) / copy bandwidth):\n")
    print("| batch | context | KV | path | weights GiB | KV read GiB | roofline ms | step ms | "
          "forward ms (device argmax: the step) | % of roofline | decode tok/s |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for b, ctx, kv_type, path, w, kv, bound, ms, fwd, frac, tps in rows:
        print(f"| {b} | {ctx} | {kv_type} | {path} | {w:.2f} | {kv:.2f} | {bound:.2f} | {ms:.2f} | "
              f"{fwd:.2f} | **{100 * frac:.0f}%** | {tps:.0f} |")
    print()


def attention(out_dir, copy):
    try:
        with open(os.path.join(out_dir, "attention_8b.txt")) as f:
            text = f.read().strip()
    except OSError:
        return
    if not text:
        return
    bw = f"{copy['copy_gb_per_s']:.0f} GB/s copy" if copy else "no copy bandwidth measured"
    print(f"Decode attention at the 8B shape (attention_bench --shape llama-3-8b; KV GB/s against "
          f"{bw}; 'f16p': round_probabilities_f16 set):\n")
    print("```")
    print(text)
    print("```\n")


def results_by_batch(bench, keep, key, value):
    """runtime_bench's rows kept by `keep`, as {batch: {key(row): value(row)}}."""
    by_batch = {}
    for result in bench["results"]:
        if "batch" in result and keep(result):
            by_batch.setdefault(result["batch"], {})[key(result)] = value(result)
    return by_batch


def decode_paths(out_dir):
    found = False
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        bench = load(path)
        if not bench or "results" not in bench:
            continue
        by_batch = results_by_batch(
            bench, lambda r: "fusion" in r and r.get("graphs") is None, path_of,
            lambda r: r["ms_per_step"])
        if not any(len(v) > 1 for v in by_batch.values()):
            continue
        if not found:
            print("Decode paths, same process and prefill (runtime_bench --fusion off,on --argmax "
                  "host,device): ms per step; old / new = (fusion off, logits to the host) over "
                  "(fusion on, device argmax):\n")
            print("| model | context | batch | fusion off, host | fusion off, device | "
                  "fusion on, host | fusion on, device | old / new |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            found = True
        order = [(False, "host"), (False, "device"), (True, "host"), (True, "device")]
        for batch in sorted(by_batch):
            ms = by_batch[batch]
            cells = [f"{ms[k]:.2f}" if k in ms else "-" for k in order]
            old, new = ms.get(order[0]), ms.get(order[3])
            ratio = f"**{old / new:.2f}x**" if old and new else "-"
            print(f"| {bench['model']} | {bench['decode_context']} | {batch} | "
                  f"{' | '.join(cells)} | {ratio} |")
    if found:
        print()


def graphs(out_dir):
    """CUDA graphs of the decode step A/B (runtime_bench --graphs off,on; step 4g)."""
    found = False
    for path in sorted(glob.glob(os.path.join(out_dir, "graphs_*.json"))):
        bench = load(path)
        if not bench or "results" not in bench:
            continue
        by_batch = results_by_batch(bench, lambda r: r.get("graphs") is not None,
                                    lambda r: r["graphs"], lambda r: r)
        if not found:
            print("CUDA graphs of the decode step (runtime_bench --graphs off,on, fusion on, "
                  "device argmax; same process and prefill): ms per step, and the timed steps "
                  "that ran as graphs:\n")
            print("| model | context | batch | graphs off | graphs on | graph steps | off / on |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            found = True
        for batch in sorted(by_batch):
            off, on = by_batch[batch].get(False), by_batch[batch].get(True)
            cell = lambda r: f"{r['ms_per_step']:.2f}" if r else "-"
            ratio = f"**{off['ms_per_step'] / on['ms_per_step']:.2f}x**" if off and on else "-"
            launches = f"{on.get('graph_launches', 0)} / {bench.get('gen', '?')}" if on else "-"
            print(f"| {bench['model']} | {bench['decode_context']} | {batch} | {cell(off)} | "
                  f"{cell(on)} | {launches} | {ratio} |")
    if found:
        print()


def hybrid(out_dir):
    found = False
    for path in sorted(glob.glob(os.path.join(out_dir, "hybrid_*.json"))):
        bench = load(path)
        if not bench or len(bench.get("runs", [])) < 2:
            continue
        if not found:
            print("Hybrid (f = 0.5, --plan none) over full attention, KV arena sized by "
                  "--gpu-memory-utilization:\n")
            print("| input + output | N | KV arena GiB | fit full / hybrid | peak conc. | "
                  "total tok/s full / hybrid | end-to-end ratio | decode-only ms/step full / "
                  "hybrid | decode tok/s full / hybrid | decode ratio |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            found = True
        full, hyb = bench["runs"][0], bench["runs"][1]

        def decode_rate(r):
            s = r["decode_only_steps"]
            return s["decode_rows"] / s["seconds"] if s["seconds"] > 0 else 0.0

        fr, hr = decode_rate(full), decode_rate(hyb)
        print(f"| {bench['input_len']} + {bench['output_len']} | {bench['num_prompts']} | "
              f"{bench['kv_budget'] / 2**30:.1f} | {full['max_sequences_planned']} / "
              f"{hyb['max_sequences_planned']} | {full['peak_concurrent']} / "
              f"{hyb['peak_concurrent']} | {full['total_tokens_per_s']:.0f} / "
              f"{hyb['total_tokens_per_s']:.0f} | **{hyb['total_tokens_per_s'] / full['total_tokens_per_s']:.3f}x** | "
              f"{full['decode_only_steps']['ms_per_step']:.1f} / "
              f"{hyb['decode_only_steps']['ms_per_step']:.1f} | {fr:.0f} / {hr:.0f} | "
              f"**{hr / fr if fr > 0 else 0:.3f}x** |")
    if found:
        print()


LLAMACPP_TARGETS = {1: 1.0, 32: 1.5}


def llamacpp_rows(path):
    # llama-batched-bench --output-format jsonl: one object per (pp, tg, pl), among log lines.
    rows = []
    try:
        with open(path) as f:
            for line in f:
                start = line.find('{"n_kv_max"')
                if start < 0:
                    continue
                try:
                    rows.append(json.loads(line[start:]))
                except ValueError:
                    pass
    except OSError:
        pass
    return rows


def our_decode_rows(out_dir):
    # batch -> (tokens/s, path, decode context, gen) from step 4's f16 runtime_bench: the new path
    # (fusion on, device argmax) where measured, else fusion on with the host's argmax, else any.
    bench = load(os.path.join(out_dir, "decode_f16.json"))
    if not bench:
        return {}
    preference = [(True, "device"), (True, "host"), (False, "device"), (False, "host")]
    best = {}
    for result in bench.get("results", []):
        if "batch" not in result:
            continue
        path = path_of(result)
        rank = preference.index(path) if path in preference else len(preference)
        kept = best.get(result["batch"])
        if kept is None or rank < kept[0]:
            best[result["batch"]] = (rank, result["tokens_per_second"], path_name(*path),
                                     bench["decode_context"], bench["gen"])
    return {b: v[1:] for b, v in best.items()}


def llamacpp(out_dir):
    theirs = llamacpp_rows(os.path.join(out_dir, "llamacpp.txt"))
    if not theirs:
        return
    ours = our_decode_rows(out_dir)
    print("Decode tokens/s against llama.cpp's CUDA build, same GPU, shape (llama-3-8b), f16 "
          "weights and f16 KV, every sequence at the same context (llama-batched-bench -pps "
          "-fa on: S_TG; ours: runtime_bench, step 4):\n")
    print("| batch | context + decoded: ours / llama.cpp | lightserve tok/s (path) | "
          "llama.cpp tok/s | ours / llama.cpp | target |")
    print("|---:|---|---:|---:|---:|---|")
    for r in sorted(theirs, key=lambda r: r["pl"]):
        batch = r["pl"]
        target = LLAMACPP_TARGETS.get(batch)
        target_text = f">= {target:.1f}x" if target else "-"
        if batch in ours:
            tps, path, context, gen = ours[batch]
            ratio = tps / r["speed_tg"] if r["speed_tg"] > 0 else 0.0
            verdict = "" if not target else (" (met)" if ratio >= target else " (not met)")
            print(f"| {batch} | {context} + {gen} / {r['pp']} + {r['tg']} | {tps:.0f} ({path}) | "
                  f"{r['speed_tg']:.0f} | **{ratio:.2f}x** | {target_text}{verdict} |")
        else:
            print(f"| {batch} | - / {r['pp']} + {r['tg']} | - | {r['speed_tg']:.0f} | - | "
                  f"{target_text} |")
    print()


def loadtest(out_dir):
    """Step 7: the load tester against the daemon, full then hybrid (bench_serving.sh's table)."""
    table = os.path.join(out_dir, "loadtest", "table.md")
    if not os.path.exists(table):
        return
    print("The load tester against lightserve serve on the GPU (dummy 8B shape, KV filling the "
          "card; scripts/bench_serving.sh: full, then hybrid f = 0.5; a dummy byte vocabulary "
          "streams no text before the end, so only tok/s and req/s are measured):\n")
    with open(table) as f:
        print(f.read())


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    copy = load(os.path.join(out_dir, "copy_bandwidth.json"))
    if copy:
        roofline(out_dir, copy)
    attention(out_dir, copy)
    decode_paths(out_dir)
    graphs(out_dir)
    llamacpp(out_dir)
    hybrid(out_dir)
    loadtest(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
