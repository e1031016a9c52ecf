"""Reads a run's trace and newest checkpoint with h5py, as a user would. Used by test_training."""
import glob
import sys

import h5py

run = sys.argv[1]
with h5py.File(f"{run}/trace.h5", "r") as t:
    assert t.attrs["format"] == "ladder-trace", t.attrs["format"]
    steps = [int(s) for s in t["checkpoints/step"][:]]
    print(f"train rows {len(t['train/loss'])}, eval rows {len(t['eval/loss'])}, checkpoints {steps}")
    print("N", int(t.attrs["N"]), "flops/token", float(t.attrs["flops_per_token"]))
newest = sorted(glob.glob(f"{run}/checkpoints/step_*.h5"))[-1]
with h5py.File(newest, "r") as c:
    roles = sorted({c["params"][name].attrs["role"] for name in c["params"]})
    print(f"checkpoint step {int(c.attrs['step'])}: {len(c['params'])} parameters, roles {roles}")
    assert c["params/embedding"].shape[1] == 32
