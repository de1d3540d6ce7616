"""Model parts: encoders, the Gaussian posterior, decoders, and the composed SeqVAE."""

from seqvae.models.decoders import DECODERS, INJECTIONS, LSTMDecoder
from seqvae.models.encoders import ENCODERS, LSTMEncoder
from seqvae.models.posterior import DiagonalGaussian, GaussianPosterior
from seqvae.models.vae import SeqVAE, VAEOutput, build_model

__all__ = [
    "DECODERS",
    "ENCODERS",
    "INJECTIONS",
    "DiagonalGaussian",
    "GaussianPosterior",
    "LSTMDecoder",
    "LSTMEncoder",
    "SeqVAE",
    "VAEOutput",
    "build_model",
]
