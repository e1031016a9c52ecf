"""Points of a ParScale sweep with N counted as the backbone's parameters only, for `ladder fit`.

    PY=~/.cache/ladder/torch-2.15.0/bin/python
    $PY docs/parscale_backbone_points.py runs/parscale-tiny > points.csv
    build/ladder fit points.csv --law parscale --bootstrap 200 --out fit-backbone

The traces' N counts every non-embedding parameter, the streams' prefixes and aggregation MLP included
(what `ladder fit runs/parscale-tiny --law parscale` uses). Chen et al. 2025 count the backbone, as
their streams add 0.2% to it; at d_model 64 they add 13%. This writes each finished run's final
validation loss with N taken from the P = 1 run of the same width (the shared backbone), so the fit
can be read both ways (docs/parscale.md).
"""

import pathlib
import sys

import h5py

runs = {}
for trace in sorted(pathlib.Path(sys.argv[1]).glob("*/trace.h5")):
    with h5py.File(trace, "r") as f:
        if len(f["eval/loss"]) == 0 or f["eval/step"][-1] != f.attrs["total_steps"]:
            continue  # not finished
        runs[trace.parent.name] = dict(width=int(f.attrs["width"]), P=int(f.attrs["P"]),
                                       N=int(f.attrs["N"]), D=int(f["eval/tokens"][-1]),
                                       loss=float(f["eval/loss"][-1]))
backbone = {r["width"]: r["N"] for r in runs.values() if r["P"] == 1}
print("run,N,D,P,loss")
for name, r in runs.items():
    if r["width"] not in backbone:
        sys.exit(f"{name}: no P = 1 run of width {r['width']} to take the backbone's N from")
    print(f"{name},{backbone[r['width']]},{r['D']},{r['P']},{r['loss']:.6f}")
