"""Serving a trained tagger: ONNX Runtime against torch eager, batch 1 latency and batch 64 throughput.

    python bench/serving.py --json serving.json            # both taggers, 1 and 2 threads
    python bench/serving.py --workdir /tmp/serving          # keep (and reuse) checkpoints and .onnx files
    python bench/serving.py --models demo --threads 1 --rounds 3 --processes 1   # a quick look

Models, trained here by the CLI into ``--workdir`` (a fresh temporary folder by default; a
checkpoint already there is reused), then exported by ``rnnkit export`` (``export_checkpoint``):

* ``demo`` -- ``rnnkit demo``'s BiGRU tagger (``DIR/demo/bigru/best``): word embedding 32, one
  bidirectional GRU layer of 40 units per direction, softmax. Sentences: the demo's test corpus
  (``make_corpus(1000, seed=2)``), in order.
* ``ud_pos`` -- ``examples/ud_pos.yaml`` trained briefly (``--ud-epochs``, ``--ud-train``): word
  embedding 100 + a character BiLSTM (32 per direction) per word, one BiLSTM layer of 128 per
  direction, softmax. Sentences: the UD English EWT test file, in order. Skipped, with a
  message, when ``--ud`` holds no ``en_ewt-ud-*.conllu``.

Batch 1 runs each of the first ``--sentences`` sentences alone (median and 90th percentile of
the calls: per-sentence latency). Batch 64 runs the first ``--batches`` x 64 sentences as
consecutive batches of 64 in file order, as ``rnnkit predict`` batches its input lines, each
padded to its longest sentence (and word); and the same sentences sorted by length first, as a
server that buckets requests would (sentences/s). Inputs are encoded and collated once, before
timing, as ``rnnkit predict`` does; what is timed:

* ``torch`` -- ``model.predict(batch)`` under ``torch.inference_mode()``: rnnkit's default, the
  compiled C++ loop wherever the probe of this build found it faster than torch's kernel.
* ``torch, compiled off`` -- the same after ``recurrence.set_compiled(False)``
  (``RNNKIT_COMPILED=0``): torch's fused GRU/LSTM kernels, packed for padding.
* ``ORT session.run`` -- ``InferenceSession.run`` on int64 numpy inputs prepared before timing:
  ONNX Runtime alone. Its outputs are emissions and tag ids, so it decodes as predict does.
* ``ORT OnnxRunner`` -- ``rnnkit.export.OnnxRunner(batch)``, what ``rnnkit predict --backend
  onnxruntime`` calls: tensors to numpy, the session, tag ids back to per-sentence lists.

Each thread count (``--threads``) sets ``torch.set_num_threads`` and the sessions'
``intra_op_num_threads`` alike (``OnnxRunner``'s own session, made with ONNX Runtime's default
threads, is replaced by one made with them). The two backends run in separate processes, as a
server would run one of them: in one process their thread pools take the two cores from each
other (see ``time_worker``). Every (model, thread count, backend) is timed in ``--processes``
fresh processes, torch's and ORT's alternating, with the rounds pooled, as bench/speed.py does
(oneDNN's LSTM runs at one of two speeds per process). Within a process, after two warm-up
passes, each round runs every batch set and on it each of the backend's two implementations
once (one pass over its sentences), the first one rotating. A ratio to ``torch`` is a ratio of
pooled medians.

Sanity: on every benched batch the exported graph's emissions are compared with the eager
model's at real (non-padded) steps, with the compiled path on and off (max abs difference), and
the OnnxRunner's tags with ``model.predict``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import machine, table  # noqa: E402

IMPLS = ("torch", "torch, compiled off", "ORT session.run", "ORT OnnxRunner")
MODELS = ("demo", "ud_pos")
BATCH = 64


# ------------------------------------------------------------------------ models

def _run(cmd: list[str], log: Path) -> None:
    """Run a training command from the repository root, its output into ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    print(f"  {time.perf_counter() - t0:.0f} s: {' '.join(cmd[2:])}", flush=True)


def train_models(args, work: Path) -> dict[str, dict]:
    """{name: {checkpoint, command}} of the models to bench, trained unless already in ``work``."""
    rnnkit = [sys.executable, "-m", "rnnkit"]
    out: dict[str, dict] = {}
    if "demo" in args.models:
        ckpt = work / "demo" / "bigru" / "best"
        cmd = rnnkit + ["demo", "--out", str(work / "demo")]
        if not ckpt.is_dir():
            _run(cmd, work / "demo.log")
        else:
            print(f"  reusing {ckpt}")
        out["demo"] = {"checkpoint": str(ckpt), "command": " ".join(cmd[2:])}
    if "ud_pos" in args.models:
        ud = Path(args.ud)
        files = {split: ud / f"en_ewt-ud-{split}.conllu" for split in ("train", "dev", "test")}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            print(f"SKIPPED ud_pos: UD English EWT is not in {ud} (missing {', '.join(missing)}); "
                  "give its folder with --ud", flush=True)
        else:
            ckpt = work / "ud_pos" / "best"
            cmd = rnnkit + ["train", "examples/ud_pos.yaml", "--set", f"trainer.epochs={args.ud_epochs}",
                            "--set", f"data.max_train_examples={args.ud_train}",
                            "--set", "trainer.num_threads=1", "--set", "trainer.progress=false",
                            *[a for split, p in files.items() for a in ("--set", f"data.{split}={p}")],
                            "--out", str(work / "ud_pos")]
            if not ckpt.is_dir():
                _run(cmd, work / "ud_pos.log")
            else:
                print(f"  reusing {ckpt}")
            out["ud_pos"] = {"checkpoint": str(ckpt), "command": " ".join(cmd[2:]),
                             "test_file": str(files["test"])}
    return out


def export_models(models: dict[str, dict]) -> None:
    """``rnnkit export`` each checkpoint to CKPT.onnx (checked there against the model)."""
    from rnnkit.run import export_checkpoint

    for name, m in models.items():
        onnx = Path(m["checkpoint"]).with_suffix(".onnx")
        t0 = time.perf_counter()
        report = export_checkpoint(m["checkpoint"], onnx)
        m.update(onnx=str(onnx), onnx_bytes=onnx.stat().st_size, export_seconds=round(time.perf_counter() - t0, 1),
                 export_check={k: report[k] for k in ("sequences", "max_abs_diff", "labels_equal", "held_out")})
        print(f"  exported {name} -> {onnx} in {m['export_seconds']} s; its check: "
              f"{report['sequences']} sequences, max abs diff {report['max_abs_diff']:.2g}", flush=True)


# ------------------------------------------------------------------------ inputs

def sentences(job: dict, cfg) -> list[list[str]]:
    """The token lists benched, in order: batch 1 takes the first ``sentences``, batch 64 the
    first ``batches`` x 64."""
    n = max(job["sentences"], job["batches"] * BATCH)
    if job["model"] == "demo":
        from rnnkit.demo import make_corpus

        return [tokens for tokens, _ in make_corpus(1000, seed=2).sentences][:n]
    from rnnkit.data import read_conllu

    d = cfg.data
    examples = read_conllu(job["test_file"], tag=d.tag, lowercase=d.lowercase, encoding=d.encoding)
    return [ex.tokens for ex in examples[:n]]


def collated(predictor, token_lists: list[list[str]], size: int) -> list[dict]:
    """Batches of ``size`` sentences as ``rnnkit predict`` builds them: the checkpoint's
    vocabularies and length limits, padded by ``collate``; no labels (a user's input)."""
    from rnnkit.data import Encoder, TaggedExample, collate

    v, d = predictor.vocabs, predictor.cfg.data
    enc = Encoder(vocab=v["words"], char_vocab=v.get("chars"), max_length=d.max_length, truncate=d.truncate)
    items = enc.encode_all([TaggedExample(tokens, None, f"sentence {i}") for i, tokens in enumerate(token_lists)])
    return [collate(items[i:i + size]) for i in range(0, len(items), size)]


# ------------------------------------------------------------------------ timing

def session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph runs sequentially; only intra-op threads matter
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


GROUPS = {"torch": IMPLS[:2], "ort": IMPLS[2:]}


def implementations(group: str, model, runner, sess) -> dict:
    """name -> fn(batch, feed): one call as a user makes it, for the implementations of one
    backend (``GROUPS``)."""
    from rnnkit import recurrence

    def eager(compiled: bool):
        def call(batch, feed):
            recurrence.set_compiled(compiled)
            with torch.inference_mode():
                return model.predict(batch)
        return call

    if group == "torch":
        return {"torch": eager(True), "torch, compiled off": eager(False)}
    return {"ORT session.run": lambda batch, feed: sess.run(None, feed),
            "ORT OnnxRunner": lambda batch, feed: runner(batch)}


def time_passes(impls: dict, sets: dict[str, tuple[list[dict], list[dict]]],
                rounds: int) -> dict[str, dict[str, list[list[float]]]]:
    """Seconds of each call: {set: {implementation: [[call, ...] per round]}}. ``sets``: name ->
    (batches, feeds). Each round runs every set, each implementation once over it, so that
    whatever the process's state does over time (allocator, caches, a burst of load) meets all
    sets and implementations alike, not the ones timed last."""
    names = list(impls)
    for batches, feeds in sets.values():  # warm-up: allocator, thread pools, ORT's first runs
        for name in names:
            for _ in range(2):
                for b, f in zip(batches, feeds):
                    impls[name](b, f)
    out = {key: {name: [] for name in names} for key in sets}
    for r in range(rounds):
        for key, (batches, feeds) in sets.items():
            # Rotate who goes first: the threads of the previous implementation may still spin
            # as the next one starts, and the first slot pays for it.
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, calls = impls[name], []
                for b, f in zip(batches, feeds):
                    t0 = time.perf_counter()
                    fn(b, f)
                    calls.append(time.perf_counter() - t0)
                out[key][name].append(calls)
    return out


def differences(model, runner, sess, batches: list[dict], feeds: list[dict]) -> dict:
    """Max abs difference of the ONNX emissions from the eager model's at real steps (compiled
    path on and off), and whether the OnnxRunner's tags equal ``model.predict``'s."""
    from rnnkit import recurrence

    worst = {"compiled": 0.0, "compiled off": 0.0}
    tags_equal = True
    for batch, feed in zip(batches, feeds):
        onnx = torch.from_numpy(sess.run(None, feed)[0])  # (B, T, K)
        valid = recurrence.length_mask(batch["lengths"], batch["inputs"].shape[1])  # (B, T)
        for key, on in (("compiled", True), ("compiled off", False)):
            recurrence.set_compiled(on)
            with torch.inference_mode():
                eager = model(batch)
            worst[key] = max(worst[key], float((eager - onnx).abs()[valid].max()))
        recurrence.set_compiled(True)
        with torch.inference_mode():
            tags_equal &= model.predict(batch) == runner(batch)
    return {"max_abs_diff": worst, "tags_equal": tags_equal}


def time_worker(job: dict) -> dict:
    """One process: one model, one thread count, one backend's implementations, every batch
    set; the ONNX Runtime process then checks the exported graph against the eager model."""
    from rnnkit import recurrence
    from rnnkit.export import OnnxRunner
    from rnnkit.run import Predictor

    torch.set_num_threads(job["threads"])
    recurrence.set_compiled(True)
    recurrence.prepare()  # the probe's verdicts for this thread count, before any timing
    predictor = Predictor(job["checkpoint"])
    model = predictor.model.eval()
    ort = job["group"] == "ort"
    # Only the ONNX Runtime process makes sessions: an idle ORT thread pool costs nothing, but
    # one that has just run spins and takes a core from torch's threads (and torch's spinning
    # OpenMP threads from ORT's): interleaved in one process at 2 threads, the demo's batch-64
    # rounds ranged over 12x (torch) and 2.6x (ORT), against 1.4x and 1.1x for each alone.
    runner = OnnxRunner(predictor.loaded, job["onnx"]) if ort else None
    sess = session(job["onnx"], job["threads"]) if ort else None
    if ort:
        runner.session = sess
    impls = implementations(job["group"], model, runner, sess)
    names = runner.names if ort else []
    tokens = sentences(job, predictor.cfg)
    with torch.inference_mode():  # the verdicts for inference, not training
        paths = {name: stack.paths for name, stack in _stacks(model)}
    out = {"paths": {name: [_name(p) for p in ps] for name, ps in paths.items()},
           "path_reasons": {name: [str(p) for p in ps] for name, ps in paths.items()}}
    n64 = job["batches"] * BATCH
    sets = {}
    for key, size, token_lists in (("1", 1, tokens[:job["sentences"]]), ("64", BATCH, tokens[:n64]),
                                   ("64 sorted", BATCH, sorted(tokens[:n64], key=len))):
        batches = collated(predictor, token_lists, size)
        sets[key] = (batches, [{n: t.numpy() for n, t in zip(names, _graph_args(b, names))} for b in batches])
        out[f"shape {key}"] = _shape(batches)
    out.update(time_passes(impls, sets, job["rounds"]))
    if ort:
        for key, (batches, feeds) in sets.items():
            out[f"diff {key}"] = differences(model, runner, sess, batches, feeds)
    recurrence.set_compiled(True)
    return out


def _shape(batches: list[dict]) -> dict:
    """How much of the padded boxes is real: what the exported graph computes over."""
    shape = {"sentences": sum(len(b["lengths"]) for b in batches),
             "tokens": sum(int(b["lengths"].sum()) for b in batches),
             "token_slots": sum(b["inputs"].numel() for b in batches)}
    if "chars" in batches[0]:
        shape.update(chars=sum(int((b["chars"] != 0).sum()) for b in batches),
                     char_slots=sum(b["chars"].numel() for b in batches),
                     boxes=[list(b["chars"].shape) for b in batches] if len(batches) <= 8 else None)
    return shape


def _graph_args(batch: dict, names: list[str]) -> list[torch.Tensor]:
    return [batch[n].long() for n in names]


def _name(path) -> str:
    """A layer's path name; both directions' if they differ."""
    from rnnkit.recurrence import Path as RunPath

    names = [path.name] if isinstance(path, RunPath) else [path.forward.name, path.backward.name]
    return "/".join(dict.fromkeys(names))


def _stacks(model):
    yield "encoder", model.encoder
    if model.chars is not None and getattr(model.chars, "rnn", None) is not None:
        yield "chars", model.chars.rnn


# ------------------------------------------------------------------------ report

SETS = ("1", "64", "64 sorted")


def summarise(name: str, threads: int, runs: list[dict]) -> list[dict]:
    """Rows of the table from the rounds of all processes pooled. The two backends ran in
    different processes, so a ratio to ``torch`` is a ratio of the pooled medians."""
    rows = []
    pooled = {key: {impl: [r for run in runs if impl in run[key] for r in run[key][impl]] for impl in IMPLS}
              for key in SETS}

    def latency(impl: str) -> float:  # median of all calls
        return statistics.median(t for r in pooled["1"][impl] for t in r)

    def throughput(key: str, impl: str) -> float:  # median of the rounds' sentences/s
        n = runs[0][f"shape {key}"]["sentences"]
        return statistics.median(n / sum(r) for r in pooled[key][impl])

    for impl in IMPLS:
        calls = sorted(t for r in pooled["1"][impl] for t in r)
        row = dict(model=name, threads=threads, impl=impl, ms=1e3 * latency(impl),
                   p90=1e3 * calls[int(0.9 * (len(calls) - 1))], lat_ratio=latency("torch") / latency(impl))
        for key in ("64", "64 sorted"):
            row[f"sps {key}"] = throughput(key, impl)
            row[f"ratio {key}"] = throughput(key, impl) / throughput(key, "torch")
            n = runs[0][f"shape {key}"]["sentences"]
            row[f"per process {key}"] = [statistics.median(n / sum(r) for r in run[key][impl])
                                         for run in runs if impl in run[key]]
        rows.append(row)
    return rows


COLUMNS = [("model", "model", "s"), ("threads", "threads", "d"), ("impl", "implementation", "s"),
           ("ms", "batch 1: ms / sentence (median)", ".3f"), ("p90", "p90 ms", ".3f"),
           ("lat_ratio", "÷ torch", ".2f"), ("sps 64", "batch 64: sentences/s", ",.0f"),
           ("ratio 64", "÷ torch", ".2f"), ("sps 64 sorted", "batch 64 sorted by length: sentences/s", ",.0f"),
           ("ratio 64 sorted", "÷ torch", ".2f")]


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: demo, ud_pos")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (torch and ORT alike)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per process")
    p.add_argument("--processes", type=int, default=3, help="fresh processes per model, thread count and backend")
    p.add_argument("--sentences", type=int, default=64, help="sentences run one at a time (batch 1)")
    p.add_argument("--batches", type=int, default=4, help="batches of 64 sentences (batch 64)")
    p.add_argument("--workdir", help="checkpoints and .onnx files (reused if there); default: a temporary folder")
    p.add_argument("--ud", default=str(ROOT.parent / "shared" / "datasets" / "ud_en_ewt"),
                   help="folder of en_ewt-ud-{train,dev,test}.conllu")
    p.add_argument("--ud-epochs", type=int, default=1)
    p.add_argument("--ud-train", type=int, default=2000, help="training sentences of the UD tagger")
    p.add_argument("--json", help="write the rows, the models and the machine record here")
    p.add_argument("--time-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time_worker:
        print(json.dumps(time_worker(json.loads(args.time_worker))))
        return 0
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"--models must be among {', '.join(MODELS)}; got {', '.join(unknown)}")
    threads = [int(t) for t in args.threads.split(",")]
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info = machine()  # the load before this run
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rnnkit-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"models in {work}:", flush=True)
        models = train_models(args, work)
        if not models:
            print("nothing to bench")
            return 1
        export_models(models)
        rows, diffs, shapes = [], [], {}
        for name, m in models.items():
            for n in threads:
                job = {"model": name, "threads": n, "rounds": args.rounds, "sentences": args.sentences,
                       "batches": args.batches, "checkpoint": m["checkpoint"], "onnx": m["onnx"],
                       "test_file": m.get("test_file")}
                runs = []
                for _ in range(args.processes):
                    for group in GROUPS:  # alternating, so that a change of load meets both
                        proc = subprocess.run([sys.executable, __file__, "--time-worker",
                                               json.dumps({**job, "group": group})], capture_output=True, text=True)
                        if proc.returncode != 0:
                            raise RuntimeError(f"timing {name} ({group}) at {n} threads failed:\n"
                                               f"{proc.stderr[-3000:]}")
                        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                new = summarise(name, n, runs)
                rows += new
                m["paths"], m["path_reasons"] = runs[0]["paths"], runs[0]["path_reasons"]
                shapes[name] = {key: runs[0][f"shape {key}"] for key in SETS}
                for key in SETS:
                    d = [run[f"diff {key}"] for run in runs if f"diff {key}" in run]
                    diffs.append(dict(model=name, threads=n, batches=key,
                                      compiled=max(x["max_abs_diff"]["compiled"] for x in d),
                                      off=max(x["max_abs_diff"]["compiled off"] for x in d),
                                      tags="yes" if all(x["tags_equal"] for x in d) else "NO"))
                for r in new:
                    print(f"{name}, {n} thread(s), {r['impl']}: batch 1 {r['ms']:.3f} ms ({r['lat_ratio']:.2f}x), "
                          f"batch 64 {r['sps 64']:,.0f} sentences/s ({r['ratio 64']:.2f}x), sorted "
                          f"{r['sps 64 sorted']:,.0f} ({r['ratio 64 sorted']:.2f}x)", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    import onnx
    import onnxruntime
    from rnnkit import _compiled

    info.update(rnnkit_march=os.environ.get("RNNKIT_MARCH", "native"), rnnkit_isa=_compiled.isa(),
                onnxruntime=onnxruntime.__version__, onnx=onnx.__version__, commit=_commit(),
                load_avg_1m_end=round(os.getloadavg()[0], 2), seconds=round(time.perf_counter() - start),
                started=started, ended=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"\nMachine: {info['cpu']} ({info['cpu_flags']}), {info['logical_cpus']} logical CPUs; rnnkit built with "
          f"-march={info['rnnkit_march']} (GEMM kernel: {info['rnnkit_isa']}); torch {info['torch']}, "
          f"onnxruntime {info['onnxruntime']}, onnx {info['onnx']}; commit {info['commit']}; "
          f"load {info['load_avg_1m']} -> {info['load_avg_1m_end']}; {info['started']} - {info['ended']}, "
          f"{info['seconds']} s in all\n")
    for name, m in models.items():
        sh = shapes[name]
        line = (f"- {name}: `{m['command']}`; {m['onnx_bytes'] / 1e6:.1f} MB ONNX (exported in "
                f"{m['export_seconds']} s); batch 1: {sh['1']['sentences']} sentences, "
                f"{sh['1']['tokens'] / sh['1']['sentences']:.1f} tokens on average; batch 64: {sh['64']['sentences']} "
                f"sentences, tokens fill {100 * sh['64']['tokens'] / sh['64']['token_slots']:.0f} % of the padded "
                f"(B, T) boxes in file order, {100 * sh['64 sorted']['tokens'] / sh['64 sorted']['token_slots']:.0f} % "
                "sorted")
        if "chars" in sh["64"]:
            line += (f"; characters fill {100 * sh['64']['chars'] / sh['64']['char_slots']:.1f} % of the (B, T, C) "
                     f"boxes in file order ({sh['64']['boxes']}), "
                     f"{100 * sh['64 sorted']['chars'] / sh['64 sorted']['char_slots']:.1f} % sorted")
        print(line + "; eager paths with the compiled path on, per layer: "
              + "; ".join(f"{k} {', '.join(v)}" for k, v in m["paths"].items()))
    print("\n" + table(rows, COLUMNS))
    print("\nExported graph against the eager model on the benched batches (max abs difference of the "
          "emissions at real steps; tags of OnnxRunner against model.predict)\n")
    print(table(diffs, [("model", "model", "s"), ("threads", "threads", "d"), ("batches", "batches", "s"),
                        ("compiled", "vs eager, compiled", ".2g"), ("off", "vs eager, compiled off", ".2g"),
                        ("tags", "tags equal", "s")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "models": models, "shapes": shapes, "rows": rows,
                       "differences": diffs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
