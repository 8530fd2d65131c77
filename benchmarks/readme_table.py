"""The README's benchmark table (markdown) from the JSON that ``compare.py --json`` wrote.

Usage::

    python benchmarks/readme_table.py bench.json

One row per (workload, C, dtype), ordered by C as the README's table is:
fastce GB/s, the roofline's GB/s in the same run, the fraction, the element
rate against float32 (other dtypes of ``evaluate logits``), and the peer
ratios (peer time per byte / fastce's; ``—`` where the peer has no such
workload or was not run).  Rows whose check failed are marked, never hidden.
"""

from __future__ import annotations

import argparse
import json
import sys

ORDER = ["evaluate logits", "evaluate logits top5", "cross_entropy", "evaluate proba", "log_loss",
         "evaluate binary logits"]
DTYPES = ["float32", "float16", "bfloat16", "float64"]
PEERS = ["torch", "sklearn", "numpy"]


def _ratio(row, name) -> str:
    peer = row.get("peers", {}).get(name)
    return f"{peer['ratio']:.1f}" if peer and "ratio" in peer else "—"


def markdown(rows) -> str:
    f32_rate = {r["C"]: r["elements"] / r["fastce_s"] for r in rows
                if r["workload"] == "evaluate logits" and r["dtype"] == "float32" and r.get("fastce_s")}
    lines = ["| workload | C | dtype | fastce GB/s | roofline GB/s | fraction | element rate vs f32 "
             "| × torch | × scikit-learn | × numpy |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]

    def key(r):
        c = 2 if r["workload"] == "evaluate binary logits" else r["C"]
        return c, ORDER.index(r["workload"]), DTYPES.index(r["dtype"])

    for r in sorted(rows, key=key):
        if not r.get("fastce_s"):
            lines.append(f"| {r['workload']} | {r['C']} | {r['dtype']} | failed: {'; '.join(r.get('problems', []))} "
                         "| | | | | | |")
            continue
        gbps = r["bytes"] / r["fastce_s"] / 1e9
        roof = r["bytes"] / r["roofline_s"] / 1e9
        vs32 = ""
        if r["workload"] == "evaluate logits" and r["dtype"] != "float32" and r["C"] in f32_rate:
            vs32 = f"{r['elements'] / r['fastce_s'] / f32_rate[r['C']]:.2f}"
        c = "2 (1-D)" if r["workload"] == "evaluate binary logits" else str(r["C"])
        problems = f" ({'; '.join(r['problems'])})" if r.get("problems") else ""
        lines.append(f"| {r['workload']}{problems} | {c} | {r['dtype']} | {gbps:.2f} | {roof:.1f} | "
                     f"{100 * gbps / roof:.0f}% | {vs32} | " + " | ".join(_ratio(r, p) for p in PEERS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    args = parser.parse_args(argv)
    with open(args.json_file) as fh:
        data = json.load(fh)
    sys.stdout.write(markdown(data["rows"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
