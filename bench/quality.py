"""Train a shipped example as written, once per seed, and summarise it as docs/results.md does.

    python bench/quality.py ud_pos                      # seeds 0 1 2, one after another
    python bench/quality.py sst2 --seeds 0 1 --jobs 2   # two runs at once (one thread each)
    python bench/quality.py ud_pos --summary            # only the table row of runs already made
    python bench/quality.py fra_eng --eval test_short=runs/data/fra_eng/test_short.txt
    python bench/quality.py --plot docs/img/results_curves.png ud_pos sst2 ...   # the curves only

Each run is ``rnnkit train examples/NAME.yaml --set trainer.seed=S --set trainer.num_threads=1
--set trainer.progress=false --out OUT/NAME/seedS`` (``--set`` adds overrides; the results then
describe the config with them, not as shipped). Its wall time is the whole command, reading and
test evaluation included. ``--eval LABEL=FILE`` also runs ``rnnkit evaluate`` of each run's best
checkpoint on FILE and reports it as split LABEL.

Writes OUT/NAME/summary.json -- per seed: wall seconds, epochs run, best epoch, dev and test
metrics; over seeds: mean and sample standard deviation of every metric -- and prints the
results table's row: the metric the run monitors, and any named with --metric. ``--plot PNG``
draws, for each example named, the monitored dev metric of every seed against the wall minutes
of training (log.jsonl's elapsed_seconds): whether a run was still improving when its time
budget ended; a run that watched its test file (trainer.watch_test) adds that curve, dashed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> str:
    try:
        from rnnkit import _compiled
        return _compiled.isa()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal: the figure still stands
        return f"unknown ({type(e).__name__})"


def run_one(rnnkit: str, name: str, seed: int, out: Path, sets: list[str], evals: dict[str, str]) -> dict:
    folder = out / name / f"seed{seed}"
    cmd = [rnnkit, "train", str(ROOT / "examples" / f"{name}.yaml"), "--set", f"trainer.seed={seed}",
           "--set", "trainer.num_threads=1", "--set", "trainer.progress=false", "--out", str(folder),
           "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    began = time.perf_counter()
    with open(out / name / f"seed{seed}.log", "w", encoding="utf-8") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed ({done.returncode}); see {out / name / f'seed{seed}.log'}")
    for label, file in evals.items():
        ev = subprocess.run([rnnkit, "evaluate", str(folder / "best"), file],
                            capture_output=True, text=True, cwd=ROOT)
        if ev.returncode != 0:
            raise SystemExit(f"evaluate {folder / 'best'} {file} failed:\n{ev.stderr[-2000:]}")
        (folder / f"eval_{label}.json").write_text(ev.stdout, encoding="utf-8")
    (folder / "wall.json").write_text(json.dumps({"wall_seconds": round(wall, 1)}) + "\n", encoding="utf-8")
    return {"seed": seed, "wall_seconds": round(wall, 1)}


def summarise(name: str, out: Path, metrics: list[str]) -> dict:
    runs = []
    for folder in sorted((out / name).glob("seed*")):
        if not folder.is_dir() or not (folder / "results.json").exists():
            continue
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines()]
        wall = folder / "wall.json"
        run = {"seed": int(folder.name[4:]), "epochs": len(log), "best_epoch": res.get("best_epoch"),
               "monitor": res.get("monitor"), "dev": res.get("dev") or {}, "test": res.get("test") or {},
               "train_seconds": round(sum(r.get("seconds", 0) for r in log), 1),
               "wall_seconds": json.loads(wall.read_text())["wall_seconds"] if wall.exists() else None,
               "stopped": log[-1].get("time_limit") or log[-1].get("early_stop") if log else None}
        for extra in sorted(folder.glob("eval_*.json")):
            text = extra.read_text(encoding="utf-8").strip()
            run[extra.stem[5:]] = json.loads(text.splitlines()[-1]) if text else {}
        runs.append(run)
    if not runs:
        raise SystemExit(f"no finished runs in {out / name}")
    splits = sorted({k for r in runs for k, v in r.items() if isinstance(v, dict)})
    stats = {}
    for split in splits:
        keys = sorted({k for r in runs for k, v in r[split].items() if isinstance(v, (int, float))})
        stats[split] = {}
        for k in keys:
            xs = [r[split][k] for r in runs if isinstance(r[split].get(k), (int, float))]
            stats[split][k] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                               "n": len(xs)}
    summary = {"example": name, "cpu": cpu_name(), "isa": isa(), "runs": runs, "stats": stats}
    (out / name / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    # without dev data the monitor is the training loss: show the test file's first metric
    shown = metrics or ([runs[0]["monitor"]] if runs[0]["dev"] else [k for k in runs[0]["test"] if k != "loss"][:1])
    walls = [r["wall_seconds"] for r in runs if r["wall_seconds"] is not None]
    print(f"{name}: {len(runs)} seeds on {summary['cpu']} ({summary['isa']} build); epochs "
          f"{', '.join(str(r['epochs']) for r in runs)}; wall "
          f"{', '.join(f'{w / 60:.1f}' for w in walls)} min")
    for split in splits:
        for m in shown:
            if m in stats[split]:
                s = stats[split][m]
                print(f"  {split} {m}: {s['mean']:.4f} ± {s['std']:.4f} "
                      f"({', '.join(f'{r[split][m]:.4f}' for r in runs if m in r[split])})")
    return summary


def plot(names: list[str], out: Path, png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(ROOT))
    from rnnkit._plot import save_figure

    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        folders = [f for f in sorted((out / name).glob("seed*")) if (f / "log.jsonl").exists()]
        finished = [json.loads((f / "results.json").read_text()) for f in folders if (f / "results.json").exists()]
        for folder in folders:
            log = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines()]
            # a run still training has no results.json yet: the example's other seeds name the metric
            dev_keys = [k for k in (log[0].get("dev") or {}) if k != "loss"]
            monitor = finished[0]["monitor"] if finished else (dev_keys[0] if dev_keys else "train_loss")
            xs, ys, t = [], [], 0.0
            test_xs, test_ys = [], []  # trainer.watch_test: the test file's curve, dashed
            for r in log:
                t = r.get("elapsed_seconds", t + r.get("seconds", 0.0))
                value = (r.get("dev") or {}).get(monitor, r.get(monitor))
                if value is not None:
                    xs.append(t / 60)
                    ys.append(value)
                if (r.get("test") or {}).get(monitor) is not None:
                    test_xs.append(t / 60)
                    test_ys.append(r["test"][monitor])
            line, = ax.plot(xs, ys, marker="o", markersize=3, label=folder.name)
            if test_ys:
                ax.plot(test_xs, test_ys, marker="o", markersize=2, linestyle="--", color=line.get_color(),
                        label=f"{folder.name} test")
            ax.set_ylabel(monitor if monitor == "train_loss" else
                          f"dev {monitor}" + (" (test dashed)" if test_ys else ""))
        ax.set_title(name)
        ax.set_xlabel("minutes of training")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("example", nargs="+", help="a name in examples/ (without .yaml); several with --plot only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each on one thread)")
    ap.add_argument("--out", default="runs/quality", help="folder of the runs (OUT/NAME/seedS)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="a config override for every run (the row then describes it, not the shipped config)")
    ap.add_argument("--eval", dest="evals", action="append", default=[], metavar="LABEL=FILE",
                    help="also evaluate each run's best checkpoint on FILE, reported as LABEL")
    ap.add_argument("--metric", action="append", default=[], help="metrics to print (default: the monitored one)")
    ap.add_argument("--summary", action="store_true", help="summarise the runs in OUT/NAME without training")
    ap.add_argument("--plot", metavar="PNG", help="only draw the dev curves of the runs of every example named")
    args = ap.parse_args(argv)
    for name in args.example:
        if not (ROOT / "examples" / f"{name}.yaml").is_file():
            sys.exit(f"examples/{name}.yaml: no such example")
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    if args.plot:
        print(plot(args.example, out, Path(args.plot)))
        return 0
    if len(args.example) > 1:
        sys.exit("name one example to train or summarise (several only with --plot)")
    args.example = args.example[0]
    evals = {}
    for item in args.evals:
        label, sep, file = item.partition("=")
        if not sep or not label or not file:
            sys.exit(f"--eval {item!r}: expected LABEL=FILE")
        evals[label] = file
    if not args.summary:
        (out / args.example).mkdir(parents=True, exist_ok=True)
        rnnkit = str(Path(sys.executable).with_name("rnnkit"))
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda s: run_one(rnnkit, args.example, s, out, args.sets, evals), args.seeds))
    summarise(args.example, out, args.metric)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
