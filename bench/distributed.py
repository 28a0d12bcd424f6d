"""Training throughput of `rnnkit train` over processes and precisions, on a real config.

    python bench/distributed.py scaling     # tokens/s of 1 and 2 processes (1 thread each), and
                                            # the efficiency tokens/s(N) / (N x tokens/s(1))
    python bench/distributed.py precision   # fp32 against bf16 (autocast) in one process:
                                            # tokens/s and the dev metric after the same steps
    python bench/distributed.py scaling --procs 1,2,4 --steps 80 --json out.json

Both run the real command, ``python -m rnnkit train CONFIG --nproc N --set ...`` (the default
config is examples/ud_pos.yaml: UD English-EWT, word + character BiLSTM tagger), for a bounded
number of optimizer steps (``trainer.max_steps_per_epoch``, one epoch), and read
``tokens_per_s`` and ``dev`` from the run's log.jsonl: ``tokens_per_s`` is every process's
real (unpadded) tokens over the epoch's training time (data reading, vocabularies, process
start and the dev evaluation are outside it). Scaling is weak: each process keeps
``--batch-size``, so N processes take N times the tokens per step. Each setting is run
``--repeats`` times, interleaved (1, 2, 1, 2, ...), and the median is reported: the machine is
shared, and a burst of load then hits every setting alike. The load average before and after
is printed beside the figures.

On a loaded machine N processes also get a larger share of the cores than one (the scheduler
shares them per runnable thread), which flatters wall-clock scaling; so each row also gives
tokens per CPU-second (``cpu_seconds`` of log.jsonl: every process's CPU time in the epoch),
and its efficiency, the work the processes spend per token against one process's. One warm-up
run first builds the compiled loop and runs its probe for this thread count, outside the
timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).parents[1]


def run_once(config: str, out: Path, *, nproc: int, steps: int, batch_size: int, threads: int,
             precision: str, eval_examples: int | None, env: dict) -> dict:
    sets = [f"trainer.out_dir={out}", "trainer.overwrite=true", "trainer.epochs=1",
            f"trainer.max_steps_per_epoch={steps}", f"trainer.batch_size={batch_size}",
            f"trainer.num_threads={threads}", f"trainer.precision={precision}", "trainer.progress=false",
            "trainer.plots=false", "trainer.patience=null", "trainer.scheduler={name: none}",
            "data.test=null"]
    if eval_examples is not None:
        sets.append(f"data.max_eval_examples={eval_examples}")
    command = [sys.executable, "-m", "rnnkit", "train", config, "--nproc", str(nproc),
               *(f"--set={s}" for s in sets)]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}\nfailed:\n{done.stderr[-3000:]}")
    (line,) = (out / "log.jsonl").read_text().splitlines()
    record = json.loads(line)
    tokens = record["tokens_per_s"] * record["seconds"]
    return {"tokens_per_s": record["tokens_per_s"], "seconds": record["seconds"], "dev": record.get("dev"),
            "tokens_per_cpu_s": round(tokens / max(record["cpu_seconds"], 1e-9), 1),
            "train_loss": record["train_loss"], "wall_s": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("scaling", "precision"))
    parser.add_argument("--config", default="examples/ud_pos.yaml")
    parser.add_argument("--procs", default="1,2", help="scaling: process counts (default 1,2)")
    parser.add_argument("--precisions", default="fp32,bf16", help="precision: which (default fp32,bf16)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per run (default: 60 for scaling, 300 for precision)")
    parser.add_argument("--batch-size", type=int, default=32, help="per process (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 for scaling, 1 for precision")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="dev examples evaluated (default: 64 for scaling, all for precision)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    scaling = args.what == "scaling"
    steps = args.steps or (60 if scaling else 300)
    repeats = args.repeats or (3 if scaling else 1)
    eval_examples = args.eval_examples if args.eval_examples is not None else (64 if scaling else None)
    settings = ([("fp32", int(n)) for n in args.procs.split(",")] if scaling
                else [(p, 1) for p in args.precisions.split(",")])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    before = os.getloadavg()
    results: dict = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        run_once(args.config, Path(tmp) / "warm-up", nproc=1, steps=2, batch_size=args.batch_size,
                 threads=args.threads, precision="fp32", eval_examples=8, env=env)
        for r in range(repeats):
            for precision, nproc in settings:
                got = run_once(args.config, Path(tmp) / f"{precision}-{nproc}", nproc=nproc, steps=steps,
                               batch_size=args.batch_size, threads=args.threads, precision=precision,
                               eval_examples=eval_examples, env=env)
                results[(precision, nproc)].append(got)
                print(f"  round {r + 1}: {precision} x {nproc} process(es): {got['tokens_per_s']:,.0f} tokens/s, "
                      f"{got['tokens_per_cpu_s']:,.0f} tokens/CPU-s, dev {got['dev']}", file=sys.stderr, flush=True)
    after = os.getloadavg()
    rows = []
    base = base_cpu = None
    for (precision, nproc), runs in results.items():
        tps = statistics.median(x["tokens_per_s"] for x in runs)
        tpc = statistics.median(x["tokens_per_cpu_s"] for x in runs)
        if base is None:
            base, base_cpu = tps, tpc
        row = {"precision": precision, "processes": nproc, "tokens_per_s": round(tps, 1),
               "runs": [x["tokens_per_s"] for x in runs], "tokens_per_cpu_s": round(tpc, 1),
               "dev": runs[-1]["dev"], "train_loss": runs[-1]["train_loss"]}
        if scaling:
            row["speedup"] = round(tps / base, 3)
            row["efficiency"] = round(tps / (nproc * base), 3)
            row["cpu_efficiency"] = round(tpc / base_cpu, 3)
        else:
            row["vs_first"] = round(tps / base, 3)
        rows.append(row)
    report = {"what": args.what, "config": args.config, "steps": steps, "batch_size_per_process": args.batch_size,
              "threads_per_process": args.threads, "repeats": repeats, "eval_examples": eval_examples,
              "load_before": [round(x, 2) for x in before], "load_after": [round(x, 2) for x in after],
              "machine": machine(), "rows": rows}
    print(f"{args.what}: {args.config}, {steps} steps, batch {args.batch_size} per process, {args.threads} "
          f"thread(s) each; load average (1, 5, 15 min) before {report['load_before']}, after {report['load_after']}")
    for row in rows:
        extra = (f"speedup {row['speedup']:.2f}x, efficiency {row['efficiency']:.0%}; per CPU-second "
                 f"{row['cpu_efficiency']:.0%}" if scaling else f"{row['vs_first']:.2f}x the first; dev {row['dev']}")
        print(f"  {row['precision']:>5} x {row['processes']}: {row['tokens_per_s']:>9,.0f} tokens/s "
              f"(runs {', '.join(f'{x:,.0f}' for x in row['runs'])}), {row['tokens_per_cpu_s']:,.0f} "
              f"tokens/CPU-s; {extra}")
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
