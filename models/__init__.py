"""Registry models bundled with soundsight: one folder per model (card.json + *.safetensors)."""
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent
