"""Fixtures shared by the training tests: one tiny text encoder and one tiny VAE per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import write_vae


@pytest.fixture(scope="session")
def encoder(tmp_path_factory) -> str:
    from train.tiny_text_encoder import build_text_encoder

    return str(build_text_encoder(tmp_path_factory.mktemp("te") / "encoder", seed=0, hidden=32))


@pytest.fixture(scope="session")
def vae(tmp_path_factory) -> Path:
    return write_vae(tmp_path_factory.mktemp("vae") / "vae")
