"""Hooks of the `latent_edit` plugin. Top level stays light (no torch)."""

from __future__ import annotations
