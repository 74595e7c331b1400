"""Hooks of the `acoustic_match` plugin (Visual Acoustic Matching / AViTAR). Top level stays light."""

from __future__ import annotations
