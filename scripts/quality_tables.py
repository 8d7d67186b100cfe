#!/usr/bin/env python3
"""Markdown tables for docs/quality.md from `lightserve eval --json` files.

    scripts/quality_tables.py passkey pk2k.json pk4k.json pk8k.json
    scripts/quality_tables.py perplexity ppl4k.json ppl8k.json

passkey: one row per mode, one column per length (accuracy % and successes/trials).
perplexity: one row per mode, ppl and Δ vs full at each checkpoint of each file.
"""
import json
import sys


def load(paths):
    """The files, with runs of the same length(s) and settings merged into one column: a later
    file adds the rows the earlier one lacks (its full-attention row is the same run's)."""
    merged = []
    for p in paths:
        d = json.load(open(p))
        key = (d["task"], tuple(d["lengths"]), d["settings"].get("window"), d.get("prefix"),
               d.get("trials_per_length"))
        into = next((m for m in merged if m[0] == key), None)
        if into is None:
            merged.append((key, d))
            continue
        have = {m["mode"] for m in into[1]["modes"]}
        into[1]["modes"] += [m for m in d["modes"] if m["mode"] not in have]
    return [d for _, d in merged]


def all_labels(docs):
    """Every row any file has (files may measure different fractions), in ordered() order."""
    seen = []
    for d in docs:
        seen += [m["mode"] for m in d["modes"] if m["mode"] not in seen]
    return ordered(seen)


def ordered(labels):
    """full, streaming, then per fraction: random, mean (test), head-min, head-min-last."""
    kinds = ["random", "test", "online", "mean", "static", "head-min", "head-min-last"]

    def key(label):
        if " f=" not in label:
            return (0 if label == "full" else 1, 0.0, 0)
        name, f = label.split(" f=")
        return (2, float(f), kinds.index(name) if name in kinds else len(kinds))

    return sorted(labels, key=key)


def passkey(docs):
    labels = all_labels(docs)
    cols = []
    for d in docs:
        for li, n in enumerate(d["lengths"]):
            w = d["settings"]["window"]
            cols.append((f"{n} (W={w}, {d['trials_per_length']} trials)", d, li))
    print("| mode | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label in labels:
        cells = []
        for _, d, li in cols:
            row = next((m for m in d["modes"] if m["mode"] == label), None)
            if row is None:
                cells.append("—")
                continue
            a = row["accuracy"][li]
            cells.append(f"{a['accuracy']:.0f} % ({a['successes']}/{a['trials']})")
        print(f"| {label} | " + " | ".join(cells) + " |")


def perplexity(docs):
    labels = all_labels(docs)
    cols = []
    for d in docs:
        for ci, n in enumerate(d["lengths"]):
            cols.append((f"ppl@{n} (prefix {d['prefix']})", d, ci))
    print("| mode | " + " | ".join(f"{c[0]} | Δ" for c in cols) + " |")
    print("|---|" + "---:|---:|" * len(cols))
    for label in labels:
        cells = []
        for _, d, ci in cols:
            full = next(m for m in d["modes"] if m["lt_mode"] == "full")
            row = next((m for m in d["modes"] if m["mode"] == label), None)
            if row is None:
                cells += ["—", "—"]
                continue
            p = row["points"][ci]["ppl"]
            f = full["points"][ci]["ppl"]
            cells += [f"{p:.3f}", "—" if row is full else f"{100 * (p / f - 1):+.2f} %"]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    kind, paths = sys.argv[1], sys.argv[2:]
    {"passkey": passkey, "perplexity": perplexity}[kind](load(paths))
