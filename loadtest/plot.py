#!/usr/bin/env python3
"""Plots a `lightserve-loadtest --json` report (docs/loadtest.md).

    python3 loadtest/plot.py REPORT.json [REPORT2.json ...] --out DIR

Writes to DIR:
  latency_cdf.png   CDFs of TTFT, TPOT, ITL and end-to-end latency (one line per report)
  server_load.png   KV usage (and lazy-slot usage) and running / waiting requests over time,
                    from the /metrics samples (lightserve's, vLLM's or llama.cpp's names)
  rate_sweep.png    for --sweep-rates reports: achieved request and output throughput, and
                    TTFT / TPOT / E2EL (median and p99) against the offered request rate, the
                    points that missed the SLOs marked, the capacity as a vertical line

A --sweep-rates report plots each rate as its own run in the CDFs and load plots; a --compare
report plots both targets.

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


def runs_of(path, document):
    """(label, report) of each single run in a --json document: a plain run, each target of a
    --compare run, each point of a --sweep-rates run."""
    stem = pathlib.Path(path).stem
    documents = document["runs"] if "runs" in document else [document]
    out = []
    for i, doc in enumerate(documents):
        name = stem if len(documents) == 1 else f"{stem} [{i + 1}] {doc.get('target', '')}"
        if "sweep" in doc:
            for point in doc["sweep"]["points"]:
                out.append((f"{name} @{point['request_rate']:g} req/s", point))
        else:
            out.append((f"{name} ({doc.get('protocol', '?')})", doc))
    return out


def sweeps_of(path, document):
    """(label, sweep) of each --sweep-rates result in a document."""
    stem = pathlib.Path(path).stem
    documents = document["runs"] if "runs" in document else [document]
    return [(stem if len(documents) == 1 else f"{stem} [{i + 1}] {doc.get('target', '')}",
             doc["sweep"]) for i, doc in enumerate(documents) if "sweep" in doc]


def plot_sweeps(sweeps, out_dir):
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (req_ax, tok_ax), (ttft_ax, lat_ax) = axes
    for label, sweep in sweeps:
        points = sorted(sweep["points"], key=lambda p: p["request_rate"])
        rates = [p["request_rate"] for p in points]
        s = [p["summary"] for p in points]
        missed = [i for i, p in enumerate(points) if not p["meets_slo"]]

        def draw(ax, values, style, name):
            line, = ax.plot(rates, values, style, marker="o", label=f"{label} {name}")
            ax.scatter([rates[i] for i in missed], [values[i] for i in missed], marker="x",
                       s=80, color=line.get_color())

        draw(req_ax, [x["request_throughput"] for x in s], "-", "achieved")
        draw(tok_ax, [x["output_throughput"] for x in s], "-", "output tok/s")
        draw(ttft_ax, [x["ttft"]["median_ms"] for x in s], "-", "TTFT p50")
        draw(ttft_ax, [x["ttft"]["p99_ms"] for x in s], "--", "TTFT p99")
        draw(lat_ax, [x["tpot"]["median_ms"] for x in s], "-", "TPOT p50")
        draw(lat_ax, [x["tpot"]["p99_ms"] for x in s], "--", "TPOT p99")
        if sweep.get("capacity_request_rate"):
            for ax in axes.flat:
                ax.axvline(sweep["capacity_request_rate"], linestyle=":", alpha=0.6)
    if sweeps:
        top = max(p["request_rate"] for _, sw in sweeps for p in sw["points"])
        req_ax.plot([0, top], [0, top], color="grey", alpha=0.4, label="offered")
    for ax, title, ylabel in [(req_ax, "Request throughput", "req/s"),
                              (tok_ax, "Output throughput", "tok/s"),
                              (ttft_ax, "TTFT", "ms"), (lat_ax, "TPOT", "ms")]:
        ax.set_title(title + " (x: missed the SLOs, dotted: capacity)")
        ax.set_xlabel("offered request rate (req/s)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "rate_sweep.png", dpi=110)
    plt.close(fig)


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
        for label, report in reports:
            values = latencies(report, key)
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=label)
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
    for label, report in reports:
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
    documents = [(p, json.loads(pathlib.Path(p).read_text())) for p in args.reports]
    reports = [run for p, d in documents for run in runs_of(p, d)]
    sweeps = [sweep for p, d in documents for sweep in sweeps_of(p, d)]
    plot_cdfs(reports, out_dir)
    plot_server_load(reports, out_dir)
    written = [out_dir / "latency_cdf.png", out_dir / "server_load.png"]
    if sweeps:
        plot_sweeps(sweeps, out_dir)
        written.append(out_dir / "rate_sweep.png")
    print("wrote " + ", ".join(str(w) for w in written))


if __name__ == "__main__":
    main()
