"""Built-in plugin `info`: what a media file holds (audio levels, image size, video streams)."""
