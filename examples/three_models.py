"""The three-model question, with synthetic models whose numbers match it.

Model A: accuracy ~98.1%, loss ~0.19 nats; B: ~98.5%, ~0.10; C: ~99.1%, ~0.25.
Which is better?  Run: python examples/three_models.py
"""

from __future__ import annotations

import numpy as np

import fastce

N_ROWS, N_CLASSES = 100_000, 10


def model_logits(rng, y, *, error_rate, p_right, wrong_loss, shared_errors):
    """Logits of a model that errs on ``error_rate`` of the rows (some of them the shared hard rows)."""
    n = y.shape[0]
    wrong = rng.random(n) < error_rate * (1 - 0.5)  # its own mistakes...
    wrong |= shared_errors & (rng.random(n) < 0.5)  # ...and half of the hard rows everyone finds hard
    # p(true class): near p_right on right rows, exp(-wrong_loss) on wrong ones (with spread).
    p_true = np.where(wrong, np.exp(-wrong_loss * rng.uniform(0.6, 1.4, n)), rng.beta(40 * p_right, 40 * (1 - p_right), n))
    p_true = np.clip(p_true, 1e-30, 1 - 1e-9)
    predicted = np.where(wrong, (y + rng.integers(1, N_CLASSES, n)) % N_CLASSES, y)
    rest = 1.0 - p_true
    probs = np.full((n, N_CLASSES), 0.0)
    probs += (rest * np.where(wrong, 0.05, 1.0 / (N_CLASSES - 1)))[:, None]
    probs[np.arange(n), predicted] = np.where(wrong, rest * (1 - 0.05 * (N_CLASSES - 2)), probs[np.arange(n), predicted])
    probs[np.arange(n), y] = p_true
    return np.log(probs).astype(np.float32)


def main() -> fastce.Comparison:
    rng = np.random.default_rng(2024)
    y = rng.integers(0, N_CLASSES, N_ROWS)
    hard = rng.random(N_ROWS) < 0.012
    models = {
        "A": model_logits(rng, y, error_rate=0.026, p_right=0.885, wrong_loss=3.3, shared_errors=hard),
        "B": model_logits(rng, y, error_rate=0.018, p_right=0.94, wrong_loss=2.6, shared_errors=hard),
        "C": model_logits(rng, y, error_rate=0.006, p_right=0.99, wrong_loss=27.0, shared_errors=hard),
    }
    return fastce.compare(y, logits=models)


if __name__ == "__main__":
    print(main())
