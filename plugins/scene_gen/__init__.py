"""scene-gen: sound -> image of the scene (Sound2Scene / Sound2Vision), written from the papers."""
