"""latent-edit plugin: GAN inversion of a photo, then a sound-driven move in latent space."""
