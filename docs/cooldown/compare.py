"""The cooldown sweep against the cosine sweep, point by point (docs/cooldown.md): each (N, D)'s final
validation loss in both, and the stable runs' EMA points against the cooldowns at the same tokens.

    ~/.cache/ladder/torch-2.15.0/bin/python docs/cooldown/compare.py \
        runs/chinchilla-tiny-cooldown docs/sweeps/chinchilla-tiny/index.csv

Reads index.csv files and traces (h5py); prints Markdown tables.
"""
import csv
import os
import sys

import h5py


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main(cooldown_dir, cosine_index):
    cosine = {(r["budget"], r["model.d_model"]): r for r in rows(cosine_index)}
    cooldown = rows(os.path.join(cooldown_dir, "index.csv"))
    print("| budget | d_model | N | D | cosine | cooldown | difference | FLOPs spent / independent |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    diffs = []
    for r in cooldown:
        c = cosine[(r["budget"], r["model.d_model"])]
        a, b = float(c["final_val_loss"]), float(r["final_val_loss"])
        diffs.append((b - a) / a)
        print(f"| {r['budget']} | {r['model.d_model']} | {r['N']} | {r['D']} | {a:.4f} | {b:.4f} | "
              f"{100 * (b - a) / a:+.2f}% | {float(r['flops_spent']) / float(r['C']):.2f} |")
    mean = sum(diffs) / len(diffs)
    worst = max(diffs, key=abs)
    spent = sum(float(r["flops_spent"]) for r in cooldown)
    independent = sum(float(r["C"]) for r in cooldown)
    print(f"\nmean difference {100 * mean:+.2f}%, worst {100 * worst:+.2f}%, "
          f"{sum(d < 0 for d in diffs)} of {len(diffs)} points lower with the cooldown")
    print(f"FLOPs spent {spent:.3e} against {independent:.3e} for the runs trained independently "
          f"({spent / independent:.3f})")

    # The EMA of each stable run's weights against the cooldowns that end at the same tokens (the
    # stable run evaluates every eval.every_steps; a cooldown's end need not be on that grid: the
    # nearest evaluation at or before it is used, and its tokens shown).
    print("\n| d_model | cooldown's tokens | cooldown | EMA at tokens | EMA | stable run | EMA - cooldown |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    gaps = []
    for r in cooldown:
        stable = os.path.join(cooldown_dir, f"stable_d_model={r['model.d_model']}", "trace.h5")
        with h5py.File(stable, "r") as f:
            tokens, loss, ema = f["eval/tokens"][:], f["eval/loss"][:], f["eval/average_loss"][:]
        target = float(r["tokens_seen"])
        at = [i for i in range(len(tokens)) if tokens[i] <= target]
        if not at:
            continue
        i = at[-1]
        b = float(r["final_val_loss"])
        gaps.append((ema[i] - b) / b)
        print(f"| {r['model.d_model']} | {int(target)} | {b:.4f} | {int(tokens[i])} | {ema[i]:.4f} | "
              f"{loss[i]:.4f} | {100 * (ema[i] - b) / b:+.2f}% |")
    print(f"\nEMA points against the cooldowns: mean gap {100 * sum(gaps) / len(gaps):+.2f}%, "
          f"largest {100 * max(gaps, key=abs):+.2f}%")


if __name__ == "__main__":
    main(*sys.argv[1:3])
