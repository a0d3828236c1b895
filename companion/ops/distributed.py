"""Training a Keras model with ``tf.distribute`` on several CPU replicas.

:func:`mirrored_fit` splits the machine's CPU into logical devices and trains one small
classifier under ``MirroredStrategy`` (or ``OneDeviceStrategy`` on one device), in a fresh
process, so that chapter 7.2 can compare the two on the same batches. (Until 0.2.0 it lived
in :mod:`companion.ops.spark`, which still forwards the old name, with a warning, for one
release.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from companion._checks import check_positive_int
from companion._optional import require

__all__ = ["mirrored_fit"]

_MIRRORED_SCRIPT = r"""
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args["devices"])])
import keras
arrays = np.load(args["data"])
X, y = arrays["X"], arrays["y"]
keras.utils.set_random_seed(args["seed"])
names = [d.name for d in tf.config.list_logical_devices("CPU")]
strategy = (tf.distribute.MirroredStrategy(names) if args["devices"] > 1
            else tf.distribute.OneDeviceStrategy(names[0]))
with strategy.scope():
    model = keras.Sequential([keras.Input((X.shape[1],)),
                              keras.layers.Dense(args["hidden"], activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(args["learning_rate"]),
                  loss="binary_crossentropy")
start = time.perf_counter()
cpu0 = time.process_time()
history = model.fit(X, y, batch_size=args["batch_size"], epochs=args["epochs"],
                    shuffle=False, verbose=0)
print(json.dumps({"devices": names, "replicas": strategy.num_replicas_in_sync,
                  "loss": [float(v) for v in history.history["loss"]],
                  "seconds": time.perf_counter() - start,
                  "cpu_seconds": time.process_time() - cpu0}))
"""


def mirrored_fit(X: np.ndarray, y: np.ndarray, *, devices: int = 2, epochs: int = 5,
                 batch_size: int = 256, hidden: int = 32, learning_rate: float = 1e-2,
                 seed: int = 42, timeout: float = 600) -> dict[str, Any]:
    """Train a small Keras classifier with ``tf.distribute`` on ``devices`` CPU replicas.

    The machine's CPU is split into ``devices`` logical devices
    (``tf.config.set_logical_device_configuration``), which must happen before TensorFlow
    initialises, so the training runs in a fresh Python process. With ``devices > 1`` it
    uses ``MirroredStrategy`` (each replica computes the gradient of its share of every
    global batch of ``batch_size`` rows, and the gradients are summed before the update);
    with 1 a ``OneDeviceStrategy``. Batches are not shuffled, so the two see the same
    batches in the same order. Returns the per-epoch ``loss``, ``replicas``, ``devices``,
    wall ``seconds`` and the process's ``cpu_seconds`` of training.
    """
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    require("tensorflow", "deep", load=False)
    check_positive_int(devices, name="devices")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be 2-D with one row per label; got {X.shape} and {y.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values.")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        np.savez(path, X=X, y=y)
        args = {"data": str(path), "devices": devices, "epochs": epochs, "hidden": hidden,
                "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}
        done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, json.dumps(args)],
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"distributed training failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
