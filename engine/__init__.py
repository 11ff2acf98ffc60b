"""Riffwright's engine: everything that is not GUI.

Audio I/O, the consistency autoencoder, conditioning, the EDM latent diffusion model and its
sampling procedures, model bundles, datasets, training and evaluation. Never imports Qt.
Heavy modules (torch) are imported by the submodules that need them, not here.
"""

__version__ = "0.1.0"
