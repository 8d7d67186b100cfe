#!/usr/bin/env python3
"""Cut real English text into calibration prompts for `lightserve calibrate` (JSONL).

The default texts are the licence files Debian's base-files package installs in
/usr/share/common-licenses (GPL-3, GPL-2, LGPL-2.1, GFDL-1.3, MPL-2.0, Apache-2.0, Artistic):
real English prose, about 150 KB, present on every Debian system. Each prompt is a run of whole
paragraphs of MIN..MAX characters (default 6000..12000, about 1.5K-3K tokens at ~4 characters a
token), followed by a short instruction so that the last prompt tokens (the w_last queries that
score laziness) ask a question about the text, as in real requests.

    python3 scripts/make_calibration_prompts.py > prompts.jsonl
    python3 scripts/make_calibration_prompts.py --min-chars 2000 --max-chars 4000 FILE... > p.jsonl
"""
import argparse
import json
import random
import re
import sys

DEFAULT_TEXTS = [
    "/usr/share/common-licenses/GPL-3",
    "/usr/share/common-licenses/GPL-2",
    "/usr/share/common-licenses/LGPL-2.1",
    "/usr/share/common-licenses/GFDL-1.3",
    "/usr/share/common-licenses/MPL-2.0",
    "/usr/share/common-licenses/Apache-2.0",
    "/usr/share/common-licenses/Artistic",
]

INSTRUCTIONS = [
    "Summarize the text above in two sentences.",
    "What are the main obligations described in the text above?",
    "List three conditions stated in the text above.",
    "Explain the text above in plain words.",
    "Which rights does the text above grant, and to whom?",
]


def paragraphs(text):
    """Paragraphs with their internal line breaks folded into spaces."""
    for block in re.split(r"\n\s*\n", text):
        para = " ".join(line.strip() for line in block.splitlines() if line.strip())
        if para:
            yield para


def prompts(paths, min_chars, max_chars, rng):
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            paras = list(paragraphs(f.read()))
        target = rng.randint(min_chars, max_chars)
        chunk = []
        size = 0
        for para in paras:
            if size + len(para) > max_chars and size >= min_chars:
                yield path, "\n\n".join(chunk)
                chunk, size = [], 0
                target = rng.randint(min_chars, max_chars)
            chunk.append(para)
            size += len(para) + 2
            if size >= target:
                yield path, "\n\n".join(chunk)
                chunk, size = [], 0
                target = rng.randint(min_chars, max_chars)
        if size >= min_chars:  # a short tail is dropped
            yield path, "\n\n".join(chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("texts", nargs="*", default=DEFAULT_TEXTS, help="English text files")
    ap.add_argument("--min-chars", type=int, default=6000)
    ap.add_argument("--max-chars", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-instruction", action="store_true", help="Text only, no question at the end")
    args = ap.parse_args()
    if args.min_chars < 1 or args.max_chars < args.min_chars:
        ap.error("need 1 <= --min-chars <= --max-chars")
    rng = random.Random(args.seed)
    count = 0
    for path, text in prompts(args.texts, args.min_chars, args.max_chars, rng):
        if not args.no_instruction:
            text += "\n\n" + INSTRUCTIONS[count % len(INSTRUCTIONS)]
        sys.stdout.write(json.dumps({"prompt": text, "source": path}) + "\n")
        count += 1
    print(f"{count} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
