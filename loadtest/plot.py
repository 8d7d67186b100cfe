#!/usr/bin/env python3
"""Plots a `lightserve-loadtest --json` report (docs/loadtest.md).

    python3 loadtest/plot.py REPORT.json [REPORT2.json ...] --out DIR

Writes to DIR:
  latency_cdf.png   CDFs of TTFT, TPOT, ITL and end-to-end latency (one line per report)
  server_load.png   KV usage (and lazy-slot usage) and running / waiting requests over time,
                    from the /metrics samples (lightserve's, vLLM's or llama.cpp's names)

Needs matplotlib (Debian python3-matplotlib, or `python3 -m venv .venv-plot &&
.venv-plot/bin/pip install matplotlib`).
"""
import argparse
import json
import pathlib
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: python3 -m venv .venv-plot && "
             ".venv-plot/bin/pip install matplotlib")

KV = ["lightserve_kv_cache_usage_perc", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
      "llamacpp:kv_cache_usage_ratio"]
SLOTS = ["lightserve_lazy_slot_usage_perc"]
RUNNING = ["lightserve_num_requests_running", "vllm:num_requests_running",
           "llamacpp:requests_processing"]
WAITING = ["lightserve_num_requests_waiting", "vllm:num_requests_waiting",
           "llamacpp:requests_deferred"]


def label_of(path, report):
    return f"{pathlib.Path(path).stem} ({report.get('protocol', '?')})"


def latencies(report, key):
    out = []
    for r in report["requests"]:
        if r.get("warmup") or not r.get("ok"):
            continue
        if key == "itl_s":
            out.extend(x * 1000 for x in r["itl_s"])
        elif r[key] >= 0:
            out.append(r[key] * 1000)
    return sorted(out)


def plot_cdfs(reports, out_dir):
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, title) in zip(axes.flat, [("ttft_s", "TTFT"), ("tpot_s", "TPOT"),
                                            ("itl_s", "ITL"), ("e2e_s", "End-to-end latency")]):
        for path, report in reports:
            values = latencies(report, key)
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=label_of(path, report))
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests" if key != "itl_s" else "fraction of gaps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_cdf.png", dpi=110)
    plt.close(fig)


def series(report, names):
    """(times, values) of the first name present in the samples."""
    samples = report.get("metrics", {}).get("series", [])
    for name in names:
        points = [(s["time_s"], s["values"][name]) for s in samples if name in s["values"]]
        if points:
            return name, [p[0] for p in points], [p[1] for p in points]
    return None, [], []


def plot_server_load(reports, out_dir):
    fig, (kv_ax, req_ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for path, report in reports:
        label = label_of(path, report)
        for names, style in [(KV, "-"), (SLOTS, ":")]:
            name, t, v = series(report, names)
            if name:
                kv_ax.plot(t, [x * 100 for x in v], style, label=f"{label} {name}")
        for names, style in [(RUNNING, "-"), (WAITING, "--")]:
            name, t, v = series(report, names)
            if name:
                req_ax.plot(t, v, style, label=f"{label} {name}")
    kv_ax.set_ylabel("KV in use (%)")
    kv_ax.grid(alpha=0.3)
    kv_ax.legend(fontsize=7)
    req_ax.set_ylabel("requests")
    req_ax.set_xlabel("seconds since the measured run began")
    req_ax.grid(alpha=0.3)
    req_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "server_load.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="lightserve-loadtest --json files")
    parser.add_argument("--out", default=".", help="directory for the PNG files")
    args = parser.parse_args()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = [(p, json.loads(pathlib.Path(p).read_text())) for p in args.reports]
    plot_cdfs(reports, out_dir)
    plot_server_load(reports, out_dir)
    print(f"wrote {out_dir / 'latency_cdf.png'} and {out_dir / 'server_load.png'}")


if __name__ == "__main__":
    main()
