"""The figures of docs/moe.md from a finished recipes/sweeps/moe-experts.toml sweep.

    ~/.cache/ladder/torch-2.15.0/bin/python docs/moe/figures.py runs/moe-experts docs/moe

Reads each run's trace.h5 as a user would (h5py), writes runs.csv (sizes, final validation loss,
throughput and its ratio to the dense run) and validation_loss.csv (loss against tokens, one column
per run), and plots loss.png with gnuplot.
"""

import csv
import pathlib
import subprocess
import sys

import h5py
import numpy as np


def read_run(trace_path):
    with h5py.File(trace_path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        tokens = f["eval/tokens"][:]
        loss = f["eval/loss"][:]
        # Throughput: the mean over the log rows after the first (which holds the start-up).
        rate = f["train/tokens_per_s"][1:]
        aux = f["train/moe_aux_loss"][:]
        cv = f["train/moe_load_cv"][:]
    return attrs, tokens, loss, float(np.mean(rate)), aux, cv


def main(sweep, out):
    sweep, out = pathlib.Path(sweep), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for trace in sorted(sweep.glob("*/trace.h5")):
        attrs, tokens, loss, rate, aux, cv = read_run(trace)
        experts = int(attrs["experts"])
        runs.append(dict(name=trace.parent.name, experts=experts, tokens=tokens, loss=loss,
                         rate=rate, total=int(attrs["total_params"]),
                         active=int(attrs["active_params"]), n=int(attrs["N"]),
                         active_n=int(attrs["active_N"]),
                         aux=float(aux[-1]) if experts else float("nan"),
                         cv=float(cv[-1]) if experts else float("nan")))
    runs.sort(key=lambda r: r["experts"])
    dense = next(r for r in runs if r["experts"] == 0)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "experts", "total_params", "active_params", "N", "active_N",
                    "final_val_loss", "tokens_per_s", "throughput_vs_dense", "final_aux_loss",
                    "final_load_cv"])
        for r in runs:
            w.writerow([r["name"], r["experts"], r["total"], r["active"], r["n"], r["active_n"],
                        f"{r['loss'][-1]:.4f}", f"{r['rate']:.0f}",
                        f"{r['rate'] / dense['rate']:.3f}", f"{r['aux']:.4f}", f"{r['cv']:.3f}"])
    with open(out / "validation_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tokens"] + [r["name"] for r in runs])
        for i, t in enumerate(dense["tokens"]):
            w.writerow([int(t)] + [f"{r['loss'][i]:.5f}" for r in runs])
    label = lambda r: "dense" if r["experts"] == 0 else f"{r['experts']} experts"
    plots = ", ".join(
        f"'{out / 'validation_loss.csv'}' using 1:{i + 2} with linespoints title '{label(r)}'"
        for i, r in enumerate(runs))
    script = f"""
set datafile separator ','
set terminal pngcairo size 800,500
set output '{out / 'loss.png'}'
set key autotitle columnhead
set xlabel 'tokens'
set ylabel 'validation loss (nats/byte)'
set title 'dense vs top-2 mixtures at equal active parameters (moe-experts sweep)'
set grid
plot {plots}
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
    print(open(out / "runs.csv").read())


if __name__ == "__main__":
    main(*sys.argv[1:3])
