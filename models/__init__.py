"""Trained weights and the model card, shipped as package data so installs find them."""

from __future__ import annotations

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).with_name("ecgnet.pt")
DEFAULT_CARD = Path(__file__).with_name("model_card.json")
DEFAULT_AF_RR = Path(__file__).with_name("af_rr.json")
