"""soundsight: audio-driven media editing from the command line."""

__version__ = "0.1.0"
