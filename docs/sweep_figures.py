"""The figures of a comparison sweep in docs/ (docs/moe.md, docs/hybrid.md), from its traces.

    PY=~/.cache/ladder/torch-2.15.0/bin/python
    $PY docs/sweep_figures.py runs/moe-experts docs/moe --label experts --title "..."
    $PY docs/sweep_figures.py runs/hybrid-mixers docs/hybrid --label pattern --title "..."

Reads each run's trace.h5 as a user would (h5py) and writes, in OUT: runs.csv (sizes, final
validation loss, throughput and its ratio to the dense run, the last routing metrics when there are
experts), validation_loss.csv (loss against tokens, one column per run) and loss.png (gnuplot). Runs
are ordered and named by the trace attribute --label (a dense run is called "dense").
"""

import argparse
import csv
import math
import pathlib
import subprocess

import h5py
import numpy as np


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_run(trace_path, label):
    with h5py.File(trace_path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        run = dict(
            name=trace_path.parent.name,
            arch=text(attrs["arch"]),
            label=text(attrs[label]),
            layers=int(attrs["depth"]),
            tokens=f["eval/tokens"][:],
            loss=f["eval/loss"][:],
            # Throughput: the mean over the log rows after the first (which holds the start-up).
            rate=float(np.mean(f["train/tokens_per_s"][1:])),
            total=int(attrs["total_params"]),
            active=int(attrs["active_params"]),
            n=int(attrs["N"]),
            flops=float(attrs["flops_per_token"]),
            aux=float(f["train/moe_aux_loss"][-1]) if "train/moe_aux_loss" in f else math.nan,
            cv=float(f["train/moe_load_cv"][-1]) if "train/moe_load_cv" in f else math.nan,
        )
    run["title"] = "dense" if run["arch"] == "dense" else f"{label} {run['label']}"
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("out")
    parser.add_argument("--label", required=True, help="the trace attribute that tells runs apart")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    sweep, out = pathlib.Path(args.sweep), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [read_run(t, args.label) for t in sorted(sweep.glob("*/trace.h5"))]
    def order(r):
        try:
            return (r["arch"] != "dense", float(r["label"]), "")
        except ValueError:
            return (r["arch"] != "dense", 0.0, r["label"])
    runs.sort(key=order)
    dense = runs[0]
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "arch", args.label, "layers", "total_params", "active_params", "N",
                    "flops_per_token", "final_val_loss", "tokens_per_s", "throughput_vs_dense",
                    "final_aux_loss", "final_load_cv"])
        for r in runs:
            w.writerow([r["name"], r["arch"], r["label"], r["layers"], r["total"], r["active"],
                        r["n"], f"{r['flops']:.4g}", f"{r['loss'][-1]:.4f}", f"{r['rate']:.0f}",
                        f"{r['rate'] / dense['rate']:.3f}", f"{r['aux']:.4f}", f"{r['cv']:.3f}"])
    with open(out / "validation_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tokens"] + [r["name"] for r in runs])
        for i, t in enumerate(dense["tokens"]):
            w.writerow([int(t)] + [f"{r['loss'][i]:.5f}" for r in runs])
    plots = ", ".join(
        f"'{out / 'validation_loss.csv'}' using 1:{i + 2} with linespoints title '{r['title']}'"
        for i, r in enumerate(runs))
    script = f"""
set datafile separator ','
set terminal pngcairo size 800,500
set output '{out / 'loss.png'}'
set key autotitle columnhead
set xlabel 'tokens'
set ylabel 'validation loss (nats/byte)'
set title '{args.title}'
set grid
plot {plots}
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
    print(open(out / "runs.csv").read())


if __name__ == "__main__":
    main()
