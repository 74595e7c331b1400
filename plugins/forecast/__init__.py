"""frame-forecast plugin: Sound2Sight audio-conditioned video forecasting."""
