"""Times Keras 3 (TensorFlow backend) bidirectional GRU/LSTM stacks; run by bench/speed.py
inside bench/.venv-keras (never imported by rnnkit). Reads a JSON job from argv[1], prints
one JSON line: seconds per training step and per inference call, one sample per round."""

from __future__ import annotations

import json
import os
import sys
import time

job = json.loads(sys.argv[1])
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
tf.config.threading.set_inter_op_parallelism_threads(job["threads"])

import keras  # noqa: E402


def model_for(cell: str, B: int, T: int, H: int, L: int) -> keras.Model:
    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    inputs = keras.Input((T, H), batch_size=B)
    y = inputs
    for _ in range(L):
        # reset_after=True (Keras' default) is PyTorch's GRU convention, so the math matches.
        y = keras.layers.Bidirectional(layer(H, return_sequences=True))(y)
    return keras.Model(inputs, y)


def main() -> None:
    B, T, H, L = job["config"]
    model = model_for(job["cell"], B, T, H, L)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, H), dtype=np.float32)
    y = np.zeros((B, T, 2 * H), dtype=np.float32)
    infer = tf.function(lambda v: model(v, training=False))
    xt = tf.constant(x)

    def train():
        model.train_on_batch(x, y)

    def predict():
        infer(xt).numpy()

    out = {}
    for name, fn in (("train", train), ("infer", predict)):
        for _ in range(job["warmup"]):
            fn()
        t0 = time.perf_counter()
        fn()
        n = max(1, int(job["target"] / max(time.perf_counter() - t0, 1e-6)))
        samples = []
        for _ in range(job["rounds"]):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples.append((time.perf_counter() - t0) / n)
        out[name] = samples
    out["versions"] = {"keras": keras.__version__, "tensorflow": tf.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
