"""Small Keras helpers of the companion's Keras models: seeding, the number of training
steps per call into TensorFlow, and scoring in chunks without retracing."""

from __future__ import annotations

import numpy as np

from companion._optional import require

#: training steps run per call into TensorFlow (``compile(steps_per_execution=...)``) by
#: matrix factorisation, whose steps are so small that Python's round trip per step is
#: most of the time: the same steps in the same order, so the same weights (tested), in
#: half the time. The other models keep one step per call: their steps are dearer, and
#: the longer trace of a multi-step call cost more than it saved in the tests
STEPS_PER_EXECUTION = 32


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend.

    TensorFlow's CPU kernels used here are deterministic once seeded (the tests check
    that two fits give identical vectors). ``tf.config.experimental.enable_op_determinism``
    is not used: in TensorFlow 2.21 it makes every ``predict`` print a C++ error line.
    """
    keras = require("keras", "deep")

    keras.utils.set_random_seed(seed)


def predict_in_chunks(model, inputs, batch_size: int = 1 << 15) -> np.ndarray:
    """Call a Keras model eagerly in chunks.

    ``model.predict`` builds a new traced function whenever the input shape changes, and
    TensorFlow then prints retracing warnings; scoring calls the model directly instead.
    """
    single = not isinstance(inputs, list | tuple)
    arrays = [inputs] if single else list(inputs)
    n = len(arrays[0])
    parts = []
    for lo in range(0, n, batch_size):
        chunk = [a[lo:lo + batch_size] for a in arrays]
        out = model(chunk[0] if single else chunk, training=False)
        parts.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(parts) if parts else np.empty((0,), np.float32)
