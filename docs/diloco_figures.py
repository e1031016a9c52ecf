"""The figures of the DiLoCo comparison in docs/parallel.md, from its traces.

    PY=~/.cache/ladder/torch-2.15.0/bin/python
    $PY docs/diloco_figures.py runs/diloco-h docs/diloco

Reads each run's trace.h5 under SWEEP as a user would (h5py): a run with one island is the data-parallel
baseline, the others are DiLoCo runs told apart by H and the pseudo-gradient dtype. Writes, in OUT:
runs.csv (final validation loss and its gap to data parallelism at equal tokens, bytes sent across
islands per token, measured, and the ratio to data parallelism's), validation_loss.csv (loss against
tokens, one column per run), loss.png (loss against tokens) and traffic.png (final loss against bytes
per token, log scale).
"""

import argparse
import csv
import pathlib
import subprocess

import h5py
import numpy as np


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_run(trace_path):
    with h5py.File(trace_path, "r") as f:
        a = f.attrs
        islands = int(a["islands"])
        tokens = f["train/tokens"][:]
        interval = np.diff(np.concatenate([[0.0], tokens]))  # tokens of each log row's interval
        if islands > 1:
            # Bytes this rank sent to the other islands per token, over the whole run.
            sent = float(np.sum(f["train/diloco_bytes_per_token"][:] * interval) / tokens[-1])
            title = f"DiLoCo H={int(a['diloco_inner_steps'])}"
            dtype = text(a["diloco_pseudo_grad_dtype"])
            if dtype != "fp32":
                title += f" {dtype}"
            lr, mu = float(a["diloco_outer_lr"]), float(a["diloco_outer_momentum"])
            short = title.replace("DiLoCo ", "")
            if (lr, mu) == (1.0, 0.0):  # the outer step is then plain averaging of the islands
                title += " averaging (outer lr 1, momentum 0)"
                short += " avg"
            elif (lr, mu) != (0.7, 0.9):  # DiLoCo's outer Nesterov settings are the default
                title += f" outer lr {lr:g} momentum {mu:g}"
                short += f" lr {lr:g} mu {mu:g}"
        else:
            # Data parallelism: the gradient all-reduce this rank sent (train/comm_bytes is per step).
            tokens_per_step = tokens[-1] / f["train/step"][-1]
            sent = float(np.sum(f["train/comm_bytes"][:] * interval) / tokens_per_step / tokens[-1])
            title = short = "data parallel"
        return dict(name=trace_path.parent.name, title=title, short=short, islands=islands,
                    h=int(a["diloco_inner_steps"]) if islands > 1 else 0,
                    dtype=text(a["diloco_pseudo_grad_dtype"]) if islands > 1 else "",
                    outer=(float(a["diloco_outer_lr"]), float(a["diloco_outer_momentum"]))
                    if islands > 1 else (0.0, 0.0),
                    tokens=f["eval/tokens"][:], loss=f["eval/loss"][:], sent=sent,
                    outer_s=float(np.nanmean(f["train/diloco_outer_s"][:])) if islands > 1
                    else float("nan"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("out")
    args = parser.parse_args()
    sweep, out = pathlib.Path(args.sweep), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for t in sorted(sweep.glob("*/trace.h5")):
        with h5py.File(t, "r") as f:
            finished = len(f["train/step"]) > 0 and "checkpoints/step" in f and \
                len(f["checkpoints/step"]) > 0 and f["checkpoints/step"][-1] == f.attrs["total_steps"]
        if finished:
            runs.append(read_run(t))
        else:
            print(f"{t.parent.name}: not finished, left out")
    runs.sort(key=lambda r: (r["islands"] > 1, r["h"], r["dtype"] != "fp32", -r["outer"][1]))
    if not runs or runs[0]["islands"] != 1:
        raise SystemExit(f"{sweep}: no data-parallel run (islands = 1) to compare with")
    dp = runs[0]
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "method", "inner_steps", "pseudo_grad_dtype", "outer_lr",
                    "outer_momentum", "tokens", "final_val_loss",
                    "gap_to_dp_percent", "bytes_per_token", "bytes_vs_dp", "outer_step_s"])
        for r in runs:
            w.writerow([r["name"], r["title"], r["h"], r["dtype"], r["outer"][0], r["outer"][1],
                        int(r["tokens"][-1]),
                        f"{r['loss'][-1]:.4f}",
                        f"{100 * (r['loss'][-1] / dp['loss'][-1] - 1):+.2f}",
                        f"{r['sent']:.1f}", f"{r['sent'] / dp['sent']:.4f}",
                        f"{r['outer_s']:.3f}"])
    with open(out / "validation_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tokens"] + [r["title"] for r in runs])
        for i, t in enumerate(dp["tokens"]):
            w.writerow([int(t)] + [f"{r['loss'][i]:.5f}" for r in runs])
    with open(out / "traffic.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bytes_per_token", "final_val_loss", "run"])
        for r in runs:
            w.writerow([f"{r['sent']:.3f}", f"{r['loss'][-1]:.5f}", r["short"]])
    plots = ", ".join(
        f"'{out / 'validation_loss.csv'}' using 1:{i + 2} with linespoints title '{r['title']}'"
        for i, r in enumerate(runs))
    script = f"""
set datafile separator ','
set terminal pngcairo size 800,500
set grid
set output '{out / 'loss.png'}'
set xlabel 'tokens (all islands)'
set ylabel 'validation loss (nats/byte)'
set title 'DiLoCo, 2 islands, against data parallelism on the same ranks and tokens'
set yrange [*:2.4]
plot {plots}
set output '{out / 'traffic.png'}'
set logscale x
set xrange [1:10000]
set yrange [*:*]
set xlabel 'bytes sent across islands per token (per rank)'
set ylabel 'final validation loss (nats/byte)'
set title 'Final loss against communication'
plot '{out / 'traffic.csv'}' using 1:2:3 with labels point pt 7 offset 1,0.6 left notitle
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)
    print(open(out / "runs.csv").read())


if __name__ == "__main__":
    main()
