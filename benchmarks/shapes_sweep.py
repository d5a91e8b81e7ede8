"""Train several variants of the embedded demo model side by side and score each with
train.evaluate — how the demo config (train/configs/shapes_demo.yaml) was chosen. Meant for a
GPU machine (runs in parallel there); on the CPU one variant takes most of an hour.

    python benchmarks/shapes_sweep.py --out runs/sweep "base:" "cosine:optim.lr_schedule=cosine optim.min_lr=1e-5"

Each variant is NAME:OVERRIDES (space-separated section.key=value on top of shapes_demo.yaml).
Prints one JSON line per variant: held-out and seen accuracies, loss at the end, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "assets" / "demo" / "shapes_text_encoder"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    parser.add_argument("--solvers", default="euler:20", help="also score with these solver:steps (comma list)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    jobs = {}
    for variant in args.variants:  # each variant trains, then scores itself: all run at once
        name, _, overrides = variant.partition(":")
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        fit = [sys.executable, "-m", "train", "fit", "--config", str(REPO / "train/configs/shapes_demo.yaml"),
               f"run.out_dir={out}", "run.save_every=100000", *overrides.split()]
        steps = [shlex.join(fit)]
        for solver_steps in args.solvers.split(","):
            solver, n = solver_steps.split(":")
            code = ("import json,sys; import train.evaluate as e; e.SAMPLER.update(solver=sys.argv[2], steps=int(sys.argv[3]));"
                    "print(json.dumps({w: e.evaluate(sys.argv[1], sys.argv[4], w, 150 if w == 'seen' else None)"
                    " for w in ('held_out', 'seen')}))")
            evaluate = [sys.executable, "-c", code, str(out / "checkpoints" / "latest"), solver, n, str(ENCODER)]
            steps.append(f"{shlex.join(evaluate)} > {shlex.quote(str(out / f'score_{solver}{n}.json'))}")
        log = (out / "stdout.txt").open("w")
        jobs[name] = (subprocess.Popen(["bash", "-c", " && ".join(steps)], cwd=REPO, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), out, time.time())
    for name, (proc, out, started) in jobs.items():
        proc.wait()
        if proc.returncode:
            print(json.dumps({"variant": name, "failed": (out / "stdout.txt").read_text()[-2000:]}), flush=True)
            continue
        losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
        for solver_steps in args.solvers.split(","):
            solver, n = solver_steps.split(":")
            result = json.loads((out / f"score_{solver}{n}.json").read_text())
            print(json.dumps({"variant": name, "sampler": solver_steps, "final_loss": round(sum(losses[-5:]) / 5, 4),
                              "seconds": round(time.time() - started), "result": result}), flush=True)

if __name__ == "__main__":
    main()
