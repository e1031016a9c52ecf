"""Loss against tokens for one model size of the cooldown sweep: the stable run, its EMA points, its
cooldowns, and the cosine sweep's runs of the same size (their final points, from its index;
docs/cooldown.md).

    ~/.cache/ladder/torch-2.15.0/bin/python docs/cooldown/plot.py \
        runs/chinchilla-tiny-cooldown docs/sweeps/chinchilla-tiny/index.csv 64 docs/cooldown

Needs h5py (the project's environment) and gnuplot.
"""
import csv
import os
import subprocess
import sys
import tempfile

import h5py


def eval_series(trace, column="loss"):
    with h5py.File(trace, "r") as f:
        return list(zip(f["eval/tokens"][:], f["eval/" + column][:]))


def rows(index):
    with open(index) as f:
        return list(csv.DictReader(f))


def main(cooldown_dir, cosine_index, d_model, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    series = {}
    stable = os.path.join(cooldown_dir, f"stable_d_model={d_model}", "trace.h5")
    series["stable run"] = eval_series(stable)
    series["stable run, EMA of the weights"] = eval_series(stable, "average_loss")
    series["cooldowns (final)"] = []
    for row in rows(os.path.join(cooldown_dir, "index.csv")):
        if row["model.d_model"] == str(d_model) and row["status"] == "done":
            trace = os.path.join(cooldown_dir, row["trace"])
            name = f"cooldown {row['budget']}"
            series[name] = eval_series(trace)
            series["cooldowns (final)"].append(series[name][-1])
    series["cosine runs (final)"] = []
    for row in rows(cosine_index):
        if row["model.d_model"] == str(d_model) and row["status"] == "done":
            series["cosine runs (final)"].append((float(row["tokens_seen"]), float(row["final_val_loss"])))
    plots = []
    data = tempfile.mkdtemp(prefix="ladder-cooldown-plot-")
    for i, (name, points) in enumerate(series.items()):
        path = os.path.join(data, f"series_{i}.dat")
        with open(path, "w") as f:
            for tokens, loss in points:
                f.write(f"{tokens} {loss}\n")
        style = "points pt 7 ps 1.5" if "final" in name else "lines lw 2" if name == "stable run" else "lines"
        if name.startswith("cooldown "):
            style, name = "lines dt 2", name if "3e+12" in name or "3e12" in name else ""
        plots.append(f"'{path}' using 1:2 with {style} title '{name}'")
    png = os.path.join(out_dir, f"loss_vs_tokens_d{d_model}.png")
    script = "\n".join([
        "set terminal pngcairo size 900,600 noenhanced",
        f"set output '{png}'",
        "set logscale x",
        "set xrange [1e6:3e7]",
        "set yrange [1.35:2.1]",
        "set xlabel 'training tokens'",
        "set ylabel 'validation loss'",
        f"set title 'd_model {d_model}: one stable run, its cooldowns and EMA points, and the cosine runs'",
        "set key top right",
        "plot " + ", \\\n  ".join(plots),
    ])
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(png)


if __name__ == "__main__":
    main(*sys.argv[1:5])
