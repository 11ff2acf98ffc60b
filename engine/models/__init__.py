"""The networks: the consistency autoencoder (`cae`), the text/audio conditioners
(`conditioning`) and the diffusion U-Net (`unet`), with their loaders. Imports only the
ground floor (errors, files, audio, weights)."""
