"""The ``rnnkit`` command: ``demo``, ``train``, ``pretrain``, ``embed``, ``evaluate``, ``predict``, ``export``, ``serve``, ``build``.

    rnnkit demo [--out runs/demo]
    rnnkit demo --gradients [--length 200] [--steps 1000]          # which cells learn across 200 steps
    rnnkit train CONFIG.yaml [--set trainer.epochs=3 ...] [--resume] [--nproc N]
    rnnkit pretrain CONFIG.yaml [--set ...]                        # a bidirectional LM (ELMo-style)
    rnnkit embed CHECKPOINT [FILE|-] [-o DIR] [--format npy|safetensors] [--layer top|N]
    rnnkit evaluate CHECKPOINT DATA
    rnnkit predict CHECKPOINT [FILE|-] > predictions.jsonl
    rnnkit predict CHECKPOINT FILE --backend onnxruntime           # through the exported ONNX file
    rnnkit export CHECKPOINT [--format onnx|pt2] [-o FILE]         # ONNX / torch.export, checked
    rnnkit inspect gradients CHECKPOINT|CONFIG DATA [--out DIR]    # |dL/dh_t| through time, PNG + JSON
    rnnkit inspect attention CHECKPOINT FILE [--out DIR]           # seq2seq attention heat maps + JSON
    rnnkit serve CHECKPOINT [--host 127.0.0.1] [--port 8000]       # HTTP API and a page to try it
    rnnkit build [--probe]            # compile the C++ recurrence now, and show (or re-run) its probe

Errors in a config, a data file or a checkpoint print one message naming the file and line
(or field) and exit with status 2 (set RNNKIT_TRACEBACK=1 to see the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


_TEDDY_OPTIONS = {"epochs": 5, "train_size": 3000, "test_size": 1000}
_GRADIENT_OPTIONS = {"steps": 1000, "length": 200, "lengths": "uniform", "models": None, "clip": 1.0}


def _demo(args: argparse.Namespace) -> int:
    mine, other = _GRADIENT_OPTIONS, _TEDDY_OPTIONS
    if not args.gradients:
        mine, other = other, mine
    given = [name for name in other if getattr(args, name) is not None]
    if args.gradients and args.progress:
        given.insert(0, "progress")
    if given:
        flag = "--" + given[0].replace("_", "-")
        if args.gradients:
            raise ValueError(f"{flag} is an option of the Teddy demo (rnnkit demo without --gradients); "
                             "--gradients takes --length, --lengths, --steps, --models and --clip")
        raise ValueError(f"{flag} is an option of rnnkit demo --gradients")
    options = {name: default if getattr(args, name) is None else getattr(args, name)
               for name, default in mine.items()}
    if args.gradients:
        from .demo_gradients import DEFAULT_MODELS, run_gradients_demo

        models = options["models"].split(",") if options["models"] else DEFAULT_MODELS
        run_gradients_demo(args.out or "runs/demo-gradients", length=options["length"],
                           steps=options["steps"], lengths=options["lengths"], models=models,
                           clip=options["clip"], seed=args.seed)
        return 0
    from .demo import run_demo

    run_demo(args.out or "runs/demo", train_size=options["train_size"], test_size=options["test_size"],
             epochs=options["epochs"], seed=args.seed, progress=args.progress)
    return 0


def _config(args: argparse.Namespace):
    """The run config of ``train``/``pretrain``: the file, ``--set`` overrides, ``--out``, ``--overwrite``."""
    from .config import load_config

    overrides = list(args.set or [])
    if args.out is not None:
        overrides.append(f"trainer.out_dir={args.out}")
    if args.overwrite:
        overrides.append("trainer.overwrite=true")
    return load_config(args.config, overrides=overrides)


def _input(stack, file: str, command: str) -> tuple[str, object]:
    """(source, lines) of FILE or standard input ('-'), decoded as the data readers decode: a
    byte-order mark dropped (it would stick to the first token), an invalid byte an error naming
    FILE:line (<stdin>:line)."""
    from .data._io import decode_lines, open_bytes

    hint = f"rnnkit {command} reads UTF-8; convert the input first (e.g. iconv -f latin1 -t utf-8)"
    if file == "-":
        source, raw = "<stdin>", getattr(sys.stdin, "buffer", None)
    else:
        source, raw = file, stack.enter_context(open_bytes(file))
    # A stdin replaced by a text stream with no bytes underneath (io.StringIO) is decoded already.
    return source, (sys.stdin if raw is None else (line for _, line in decode_lines(raw, source, hint=hint)))


def _train(args: argparse.Namespace) -> int:
    from .run import train

    cfg = _config(args)  # a bad config fails here, before any launch
    if args.nproc is not None and args.nproc > 1:
        return _launch(args, cfg)
    summary = train(cfg, resume=args.resume)
    if summary:  # empty on torchrun ranks other than 0
        print(json.dumps(summary))
    return 0


def _launch(args: argparse.Namespace, cfg) -> int:
    """``rnnkit train ... --nproc N``: the same command in N processes on this machine, started by
    torch's launcher (``python -m torch.distributed.run --standalone --nproc_per_node N -m rnnkit
    train ...``), which gives each its RANK, LOCAL_RANK and WORLD_SIZE and stops them all when
    one fails. Returns the launcher's exit status."""
    import subprocess

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"--nproc {args.nproc}: this process already runs under torchrun "
                         f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); drop --nproc, torchrun starts the processes")
    child = [args.config, *(f"--set={s}" for s in args.set or [])]
    child += [f"--out={args.out}"] if args.out is not None else []
    child += ["--resume"] * args.resume + ["--overwrite"] * args.overwrite
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "rnnkit", "train", *child]
    print(f"rnnkit train: {args.nproc} processes on this machine through torch.distributed.run "
          f"(trainer.backend {cfg.trainer.backend}: gloo on CPU, nccl on CUDA); rank 0 writes "
          f"{cfg.trainer.out_dir}/ (log.jsonl, last, best, results.json); every process's messages come "
          "here on stderr", file=sys.stderr, flush=True)
    try:
        return subprocess.run(command).returncode
    except KeyboardInterrupt:  # the launcher got the same Ctrl-C and stops its workers
        return 130


def _pretrain(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .run import train

    cfg = _config(args)
    if cfg.model.type != "BiLanguageModel":
        raise ConfigError(f"{args.config}: model.type: rnnkit pretrain trains a BiLanguageModel; got "
                          f"{cfg.model.type} (train it with rnnkit train)")
    summary = train(cfg, resume=args.resume)
    if summary:
        print(json.dumps(summary))
    return 0


def _embed(args: argparse.Namespace) -> int:
    import contextlib

    from .embed import embed_file

    with contextlib.ExitStack() as stack:
        source, lines = _input(stack, args.file, "embed")
        summary = embed_file(args.checkpoint, lines, args.output, source=source, format=args.format,
                             layer=args.layer, batch_size=args.batch_size)
    print(json.dumps(summary))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .run import evaluate

    metrics = evaluate(args.checkpoint, args.data, batch_size=args.batch_size)
    print(json.dumps({"checkpoint": str(args.checkpoint), "data": str(args.data), **metrics}))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import contextlib

    from .run import predict

    if args.prefix is not None and args.file != "-":
        raise ValueError(f"--prefix {args.prefix!r} is the input; give it or FILE ({args.file}), not both")
    with contextlib.ExitStack() as stack:
        if args.prefix is not None:
            source, lines = "<prefix>", [args.prefix]
        else:
            source, lines = _input(stack, args.file, "predict")
        out = sys.stdout
        sampling = {"strategy": args.strategy, "temperature": args.temperature, "top_k": args.top_k,
                    "seed": args.seed, "max_length": args.max_length, "across_lines": args.across_lines}
        for record in predict(args.checkpoint, lines, source=source, batch_size=args.batch_size,
                              backend=args.backend, model_file=args.model, tag_scheme=args.tag_scheme,
                              probabilities=args.probs, windows=args.windows, sampling=sampling):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return 0


def _export(args: argparse.Namespace) -> int:
    from .run import export_checkpoint

    if args.format == "onnx":
        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not _importable(m)]
        if missing:
            print(f"rnnkit export: error: ONNX export needs {', '.join(missing)}; install with: "
                  "pip install 'rnnkit[export]'", file=sys.stderr)
            return 2
    report = export_checkpoint(args.checkpoint, args.output, format=args.format,
                               max_new_tokens=args.max_new_tokens)
    print(f"exported {args.checkpoint} -> {report['file']} (+ {report['meta']})\n"
          f"checked against the model on {report['sequences']} sequences (held out: {report['held_out']}; "
          f"the rest generated, padded, batch 1 included): max abs difference {report['max_abs_diff']:.2g} "
          f"<= {report['tolerance']:g}, decoded labels identical", file=sys.stderr)
    print(json.dumps(report))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .run import inspect_attention, inspect_gradients

    if args.what == "attention":
        summary = inspect_attention(args.source, args.data, args.out, max_sentences=args.max_sentences)
    else:
        summary = inspect_gradients(args.source, args.data, args.out, batch_size=args.batch_size)
    print(json.dumps(summary))
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serve import serve
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("fastapi", "uvicorn", "starlette"):
            raise
        print(f"rnnkit serve: error: serving needs fastapi and uvicorn ({e.name} is not installed); "
              "install them with: pip install 'rnnkit[serve]'", file=sys.stderr)
        return 2
    serve(args.checkpoint, host=args.host, port=args.port, backend=args.backend, model_file=args.model)
    return 0


def _build(args: argparse.Namespace) -> int:
    import time

    import torch

    from . import _compiled

    from . import recurrence

    if not recurrence.compiled_enabled():
        print(f"rnnkit build: nothing to do: RNNKIT_COMPILED={os.environ.get('RNNKIT_COMPILED')} turns "
              "the compiled recurrence off", file=sys.stderr)
        return 1
    start = time.monotonic()
    if not _compiled.available():
        print(f"rnnkit build: the compiled recurrence could not be built: {_compiled.error()}\n"
              "GRU/LSTM layers will run on torch's kernels and the Python loop instead.", file=sys.stderr)
        return 1
    where = os.path.dirname(_compiled._ext.__file__)
    print(f"compiled recurrence ready in {time.monotonic() - start:.1f} s (torch {torch.__version__}; "
          f"-march={_compiled._march()}, GEMM kernel {_compiled.isa()}; {where})")
    from . import _probe

    if not _probe.enabled():
        print("probe: off (RNNKIT_PROBE=0): GRU and LSTM layers run on the compiled loop wherever it can run them")
        return 0
    record = _probe.verdicts(again=args.probe)
    if "error" in record:
        print(f"probe: failed ({record['error']}): GRU and LSTM layers run on torch's kernels", file=sys.stderr)
        return 1
    sizes = ", ".join(str(tuple(s)) for s in record["sizes"])
    print(f"probe ({record['when']}, {record['threads']} torch threads): the compiled loop's speed over torch's "
          f"kernel at (B, T, H) = {sizes}; a layer runs on the loop where the ratios around its "
          f"B x H x (D + H) are at least {_probe.THRESHOLD}:")
    for name, ratios in record["ratios"].items():
        won = [r >= _probe.THRESHOLD for r in ratios]
        route = ("compiled loop" if all(won) else "torch's kernel" if not any(won)
                 else "compiled loop for small layers" if won[0] and not won[-1]
                 else "compiled loop for large layers" if won[-1] and not won[0] else "compiled loop for some sizes")
        print(f"  {_probe.describe(name):<30} " + " ".join(f"{r:5.2f}x" for r in ratios) + f"  -> {route}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2; got {text}")
    return value


def _finite(low: float, *, inclusive: bool):
    """An argparse type: a finite number above ``low`` (or equal to it when ``inclusive``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= low if inclusive else value > low) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number {'>=' if inclusive else '>'} {low:g}; got {text}")
        return value

    return parse


_non_negative = _finite(0, inclusive=True)
_positive_float = _finite(0, inclusive=False)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 65535; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="GRU vs BiGRU on words whose tag only later words decide; --gradients: "
                     "which cells carry a gradient across 200 steps",
        description="Generate a corpus where ambiguous words (\"Teddy\" in \"Teddy Roosevelt was a "
                    "president\" vs \"Teddy bears are on sale\") are tagged by the words after them; "
                    "train a GRU and a BiGRU tagger with the same budget; print their accuracy, save "
                    "checkpoints and learning curves, and tag example sentences. With --gradients: "
                    "train a tanh RNN, a ReLU RNN, a GRU, an LSTM and a 4-layer tanh RNN without and "
                    "with residual connections + layer norm on sequences whose label is their first "
                    "token, with the same budget; print their accuracy at length T and how much of "
                    "the gradient reaches the first token before and after training; write "
                    "gradients.png and gradients.json.")
    demo.add_argument("--out", default=None, help="output folder (default: runs/demo; with --gradients: "
                                                  "runs/demo-gradients)")
    demo.add_argument("--epochs", type=_positive, default=None, help="epochs per model (default: 5)")
    demo.add_argument("--train-size", type=_positive, default=None, help="training sentences (default: 3000)")
    demo.add_argument("--test-size", type=_positive, default=None, help="test sentences (default: 1000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    demo.add_argument("--gradients", action="store_true",
                      help="the gradients-through-time demo instead (options below)")
    demo.add_argument("--length", type=_at_least_two, default=None,
                      help="--gradients: sequence length T (default: 200)")
    demo.add_argument("--lengths", choices=("uniform", "log-uniform"), default=None,
                      help="--gradients: how training lengths are drawn from 2 to T (default: uniform; "
                           "log-uniform: half of the batches 2 to sqrt(2T) long)")
    demo.add_argument("--steps", type=_positive, default=None,
                      help="--gradients: training steps per model (default: 1000)")
    demo.add_argument("--models", default=None, metavar="A,B,...",
                      help="--gradients: models to train, from tanh, relu, gru, lstm, deep-tanh, "
                           "deep-tanh-res-ln, deep-gru, deep-gru-res-ln (default: the first six)")
    demo.add_argument("--clip", type=_non_negative, default=None,
                      help="--gradients: gradient-norm clip, 0 for none (default: 1.0)")
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train", help="train a model from a YAML config",
        description="Train the model a YAML config describes (see examples/*.yaml). Writes "
                    "OUT/best and OUT/last checkpoints, OUT/log.jsonl (one line per epoch), "
                    "OUT/curves.png and OUT/results.json; prints the summary as JSON.",
        epilog="example: rnnkit train examples/ud_pos.yaml --set trainer.epochs=3 "
               "--set model.options.encoder.hidden_sizes=[128]")
    train.add_argument("config", metavar="CONFIG", help="YAML config file")
    train.add_argument("--set", metavar="FIELD=VALUE", action="append",
                       help="override a config field (dotted path, YAML value); repeatable")
    train.add_argument("--out", metavar="DIR", help="output folder (same as --set trainer.out_dir=DIR)")
    train.add_argument("--resume", action="store_true",
                       help="continue exactly from OUT/last (weights, optimizer, schedule, RNG)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in OUT (same as --set trainer.overwrite=true)")
    train.add_argument("--nproc", metavar="N", type=_positive, default=None,
                       help="train in N processes on this machine (torch.distributed.run, "
                            "DistributedDataParallel; gloo on CPU, nccl on CUDA): each takes 1/N of "
                            "every batch of N x trainer.batch_size; same as torchrun --nproc_per_node N "
                            "-m rnnkit train ... (multi-node: docs/training.md)")
    train.set_defaults(func=_train)

    pretrain = sub.add_parser(
        "pretrain", help="pre-train a bidirectional language model (ELMo-style) from a YAML config",
        description="Train a BiLanguageModel (model.type in CONFIG): a forward and a backward causal LM "
                    "that share the embedding and output layer; neither ever reads the token it predicts. "
                    "Reads plain text (data.format: text, one sentence per line) or the text of any "
                    "labelled format (conllu, conll, csv, tsv, jsonl, label_text; labels not read). Reports "
                    "dev perplexity per direction. The checkpoint feeds rnnkit embed and the contextual "
                    "option of taggers and classifiers.",
        epilog="example: rnnkit pretrain examples/bilm_ud.yaml --set trainer.epochs=2")
    pretrain.add_argument("config", metavar="CONFIG", help="YAML config file with model.type: BiLanguageModel")
    pretrain.add_argument("--set", metavar="FIELD=VALUE", action="append",
                          help="override a config field (dotted path, YAML value); repeatable")
    pretrain.add_argument("--out", metavar="DIR", help="output folder (same as --set trainer.out_dir=DIR)")
    pretrain.add_argument("--resume", action="store_true", help="continue exactly from OUT/last")
    pretrain.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    pretrain.set_defaults(func=_pretrain)

    embed = sub.add_parser(
        "embed", help="contextual vectors of every token of a text file",
        description="Read one input per line from FILE (or standard input), tokenised as the checkpoint's "
                    "training data was; write every token's vectors at one layer: forward half, backward "
                    "half (for a bidirectional layer or a biLM) and merged, as .npy files or one "
                    "safetensors file, with index.jsonl (sentence, position, token, where) and info.json. "
                    "Works from BiLanguageModel, tagger, classifier and language-model checkpoints.")
    embed.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (e.g. runs/bilm/best)")
    embed.add_argument("file", metavar="FILE", nargs="?", default="-", help="input file, or - for stdin")
    embed.add_argument("-o", "--output", metavar="DIR", default=None,
                       help="output folder (default: CHECKPOINT.vectors beside the checkpoint folder)")
    embed.add_argument("--format", choices=("npy", "safetensors"), default="npy", help="default: npy")
    embed.add_argument("--layer", default="top",
                       help="top (default) or a layer number 1..L; 0 is a biLM's token layer (static)")
    embed.add_argument("--batch-size", type=_positive, default=64, help="inputs per batch (default: 64)")
    embed.set_defaults(func=_embed)

    evaluate = sub.add_parser(
        "evaluate", help="evaluate a checkpoint on a labelled file",
        description="Read DATA the way the checkpoint's training data was read, and print the "
                    "loss and metrics as one JSON line. A label the model does not know is an "
                    "error naming file:line.")
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (e.g. runs/x/best)")
    evaluate.add_argument("data", metavar="DATA", help="labelled file in the training data's format")
    evaluate.add_argument("--batch-size", type=_positive, default=None, help="default: the training batch size")
    evaluate.set_defaults(func=_evaluate)

    predict = sub.add_parser(
        "predict", help="predict for each line of a file (JSONL out)",
        description="Read one input per line from FILE (or standard input with '-' or no FILE): "
                    "plain text, or a JSON object with \"text\" or \"tokens\". Write one JSON object "
                    "per line: tokens and tags (tagger), label (classifier) or value (regression), "
                    "translation (seq2seq) or continuation (language model), plus the input's "
                    "fields. A series classifier reads a .ts FILE and writes where, label and gold. "
                    "A forecaster reads a series FILE (as its training data) and writes where, origin, "
                    "forecast per target column in the series' units (and gold where FILE has it). "
                    "A generator reads a class name (or {\"label\": ...}) per line and writes label "
                    "and text. An audio model reads a JSONL manifest FILE ({\"path\": ...} per line) and "
                    "writes where, path, label (classifier) or transcript (Transcriber), and gold.")
    predict.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (e.g. runs/x/best)")
    predict.add_argument("file", metavar="FILE", nargs="?", default="-", help="input file, or - for stdin")
    predict.add_argument("--batch-size", type=_positive, default=64, help="inputs per batch (default: 64)")
    predict.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                         help="torch (default) or onnxruntime: run the ONNX file `rnnkit export` wrote "
                              "(same output; needs rnnkit[export])")
    predict.add_argument("--model", metavar="FILE", default=None,
                         help="the exported ONNX file for --backend onnxruntime (default: CHECKPOINT.onnx)")
    predict.add_argument("--probs", action="store_true",
                         help="a classifier's records also map every label to its probability")
    predict.add_argument("--tag-scheme", choices=("model", "input", "iob1", "iob2", "iobes"), default="model",
                         help="span tags as the model writes them (default), as the training files did "
                              "(input), or in a named scheme")
    predict.add_argument("--windows", choices=("last", "all"), default="last",
                         help="forecaster: forecast after FILE's last row (last, default) or from every "
                              "data.stride-th window as well (all)")
    predict.add_argument("--prefix", metavar="TEXT", default=None,
                         help="predict for TEXT instead of reading FILE (e.g. a language model's prompt)")
    sample = predict.add_argument_group("generator and language model sampling")
    sample.add_argument("--strategy", choices=("greedy", "sample"), default="greedy",
                        help="greedy (default: the most likely token) or sample")
    sample.add_argument("--temperature", type=_positive_float, default=None,
                        help="sample: divide log-probabilities by this (default 1; lower is more conservative)")
    sample.add_argument("--top-k", type=_positive, default=None, help="sample: only from the K most likely tokens")
    sample.add_argument("--seed", type=int, default=None, help="sample: seed, for repeatable samples")
    sample.add_argument("--max-length", "--max-tokens", dest="max_length", type=_positive, default=None,
                        help="most tokens generated (generator: end included, default its max_length; "
                             "language model: new tokens, default 20)")
    sample.add_argument("--across-lines", action="store_true",
                        help="language model trained on a stream of lines: write a line end as a newline "
                             "and go on to --max-tokens instead of stopping there")

    export = sub.add_parser(
        "export", help="export a checkpoint to ONNX or a torch.export program, checked against it",
        description="Export the checkpoint's model through torch.export: ONNX (for ONNX Runtime, "
                    "Triton; needs rnnkit[export]) or .pt2 (torch.export.load). Batch size, length "
                    "and padding stay dynamic (lengths is an input). Writes FILE and FILE's name "
                    "with .json: input and output names, dims, vocabularies, labels, tokenizer. "
                    "The export is run against the model on held-out examples (the run's test or "
                    "dev file) and generated padded batches, and kept only if logits agree within "
                    "1e-4 and every decoded label is the same. See docs/serving.md.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (e.g. runs/x/best)")
    export.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="default: onnx")
    export.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="file to write (default: CHECKPOINT.onnx / CHECKPOINT.pt2 beside the folder)")
    export.add_argument("--max-new-tokens", type=_positive, default=None,
                        help="tokens a language model or seq2seq graph decodes (default: what predict decodes)")
    export.set_defaults(func=_export)

    inspect = sub.add_parser(
        "inspect", help="see inside a model: gradients through time, attention maps",
        description="gradients: on the first examples of DATA (read as the run's data), the norm of "
                    "dL/dh_t at every position t, per recurrent layer and direction (a backward "
                    "direction's curve runs the other way in time), for the checkpoint and for an "
                    "untrained model of its config (or, given a config file, the untrained model "
                    "alone). Writes OUT/gradients.json and OUT/gradients.png. "
                    "attention: for the first sentences of DATA (one source sentence per line, as rnnkit "
                    "predict reads them; a line with a TAB is read as the run's parallel file), a "
                    "Seq2Seq checkpoint trained with context: attention translates greedily; writes "
                    "OUT/attention.json (source, target and weights, one row per generated token) and "
                    "a heat map per sentence, OUT/attention_NNN.png.")
    inspect.add_argument("what", choices=("gradients", "attention"), help="what to inspect")
    inspect.add_argument("source", metavar="CHECKPOINT|CONFIG",
                         help="checkpoint folder (or, for gradients, a YAML config)")
    inspect.add_argument("data", metavar="DATA", help="gradients: labelled file in the run's data format; "
                         "attention: source sentences")
    inspect.add_argument("--out", default="runs/inspect", help="output folder (default: runs/inspect)")
    inspect.add_argument("--batch-size", type=_positive, default=16,
                         help="gradients: examples inspected (default: 16)")
    inspect.add_argument("--max-sentences", type=_positive, default=8,
                         help="attention: sentences drawn (default: 8)")
    inspect.set_defaults(func=_inspect)
    predict.set_defaults(func=_predict)

    serve = sub.add_parser(
        "serve", help="serve a checkpoint over HTTP, with a page to try it",
        description="Load CHECKPOINT once and answer POST /predict with {\"text\": ...}, {\"texts\": [...]} "
                    "or {\"tokens\": [...]} (the records `rnnkit predict` prints; \"left_context\": true "
                    "for a tagger, \"probabilities\": true for a classifier); GET /info, GET /health, and "
                    "GET / for a page that tags (classifies, continues, translates) what you type. "
                    "Requests that arrive together share one model call. Ctrl-C stops. Needs "
                    "pip install 'rnnkit[serve]'.")
    serve.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (e.g. runs/demo/bigru/best)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000; 0: any free port)")
    serve.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                       help="torch (default) or onnxruntime: run the ONNX file `rnnkit export` wrote "
                            "(same output; needs rnnkit[export])")
    serve.add_argument("--model", metavar="FILE", default=None,
                       help="the exported ONNX file for --backend onnxruntime (default: CHECKPOINT.onnx)")
    serve.set_defaults(func=_serve)

    build = sub.add_parser(
        "build", help="compile the C++ recurrence now (otherwise done on first use)",
        description="Build rnnkit's compiled GRU/LSTM time loop for this machine and torch version "
                    "(a C++ compiler and ninja are needed; about 35 s), or report that it is already "
                    "built. Exits with status 1 and the reason if it cannot be built; rnnkit then "
                    "runs on the pure PyTorch paths. Then prints the probe: how fast the loop ran "
                    "against torch's kernels on this CPU, per kind of layer, and which one layers take.")
    build.add_argument("--probe", action="store_true",
                       help="time the loop against torch's kernels again (otherwise the kept result is shown)")
    build.set_defaults(func=_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors a person can act on -- a bad config, data file or checkpoint, a
    training run that diverged (``TrainingError``), a file that cannot be opened (any OSError
    naming a file: missing, permission denied, a directory) -- print one line
    ``rnnkit COMMAND: error: ...`` and return 2; RNNKIT_TRACEBACK=1 re-raises them instead."""
    from .checkpoint import CheckpointError

    try:
        from .config import ConfigError
    except ModuleNotFoundError as e:  # a layers-and-heads install: the CLI needs the train extra
        print(f"rnnkit: the command line needs the packages of rnnkit[train] ({e.name} is not installed); "
              "install them with: pip install 'rnnkit[train]'", file=sys.stderr)
        return 2
    from .training.trainer import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`rnnkit predict ... | head`): what it wanted was written; stop
        # quietly, and keep Python's exit-time flush of stdout from raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ConfigError, CheckpointError, ValueError, TrainingError, OSError) as e:
        if os.environ.get("RNNKIT_TRACEBACK"):
            raise
        if isinstance(e, OSError):
            if e.filename is None and not isinstance(e, FileNotFoundError):
                raise  # no file to name (a socket, a full disk mid-write): the traceback says more
            if e.filename is not None and e.strerror:
                files = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else f"{e.filename}"
                e = f"{files}: {e.strerror}"
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra's package (e.g. rnnkit[audio]'s soundfile) is missing
        if "pip install 'rnnkit[" not in str(e) or os.environ.get("RNNKIT_TRACEBACK"):
            raise
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
