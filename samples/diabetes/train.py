"""Train the sample diabetes classifier, deterministically and offline.

Uses the diabetes data set bundled with scikit-learn (no download): 442 patients, 10
standardised features; the target (disease progression after a year) is binarised at its
median, so the model answers "worse than typical" (1) or not (0).

    python samples/diabetes/train.py --out samples/diabetes/model            # version 1
    python samples/diabetes/train.py --out samples/diabetes/model-v2 --version 2

Version 1 is a logistic regression; version 2 a shallow decision tree, so a green
deployment visibly answers differently from blue on some rows. Same inputs, same script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def dataset() -> tuple[np.ndarray, np.ndarray]:
    """Features and the binarised target (1 = progression above the median)."""
    data = load_diabetes()
    y = (data.target > np.median(data.target)).astype(int)
    return data.data, y


def build(version: int):
    """The estimator for ``version``; both are deterministic (fixed seeds, no randomness)."""
    if version == 1:
        return LogisticRegression(C=1.0, max_iter=1000)
    if version == 2:
        return DecisionTreeClassifier(max_depth=3, random_state=0)
    raise SystemExit(f"--version: {version} is not a known model version (use 1 or 2)")


def train(out: Path, version: int = 1) -> Path:
    """Fit the model for ``version`` and write ``out/model.pkl``; returns its path."""
    x, y = dataset()
    model = build(version).fit(x, y)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.pkl"
    joblib.dump(model, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "model",
        help="folder to write model.pkl into (default: samples/diabetes/model)",
    )
    parser.add_argument("--version", type=int, default=1, help="1 (logistic) or 2 (tree)")
    args = parser.parse_args(argv)
    path = train(args.out, args.version)
    print(f"wrote {path} (version {args.version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
