"""The sentence VAE: encoder -> posterior q(z|x) -> z -> decoder p(x|z), composed, plus its builder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqvae.data.batching import Batch
from seqvae.data.tokenizers import UNK_ID
from seqvae.models.decoders import DECODERS
from seqvae.models.encoders import ENCODERS
from seqvae.models.init import initialise
from seqvae.models.output_layer import check_adaptive
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior, GaussianPosterior, empty_posterior
from seqvae.errors import SeqVAEError
from seqvae.models.word_dropout import word_dropout


@dataclass
class VAEOutput:
    """One forward pass: the reconstruction -log p(x|z) per sentence (B,), summed over the real
    targets, the posterior (B, Z), the z decoded from (B, Z), and the KL the objective uses (B,):
    analytic for the Gaussian, the Monte-Carlo estimate log q(z|x) - log p(z) on this z with a
    flow."""

    reconstruction: torch.Tensor
    posterior: DiagonalGaussian | FlowPosterior
    z: torch.Tensor
    kl: torch.Tensor


class SeqVAE(nn.Module):
    """Encoder, posterior and decoder composed; each part can be used on its own.

    Without an encoder and posterior (``latent_dim = 0``) the model is the decoder alone, a
    language model: ``encode`` gives an empty posterior (B x 0), so z has no dimension, the KL is
    exactly 0 and the reconstruction term is the exact -log p(x)."""

    def __init__(
        self,
        *,
        encoder: nn.Module | None,
        posterior: GaussianPosterior | None,
        decoder: nn.Module,
        unk_id: int = UNK_ID,
    ) -> None:
        super().__init__()
        self.unk_id = unk_id
        self.encoder = encoder
        self.posterior = posterior
        self.decoder = decoder

    @property
    def latent_dim(self) -> int:
        return 0 if self.posterior is None else self.posterior.latent_dim

    @property
    def is_language_model(self) -> bool:
        """True for the decoder alone (latent_dim = 0): no z, no KL, exact likelihoods."""
        return self.posterior is None

    def encode(self, batch: Batch) -> DiagonalGaussian | FlowPosterior:
        """q(z|x) for every sentence of the batch; the encoder reads x_1 ... x_n <eos>."""
        if self.posterior is None:
            return empty_posterior(batch.targets.shape[0], device=batch.targets.device)
        return self.posterior(self.encoder(batch.targets, batch.lengths))

    def forward(
        self,
        batch: Batch,
        *,
        word_dropout_rate: float = 0.0,
        generator: torch.Generator | None = None,
        use_mean: bool = False,
        noise=None,
    ) -> VAEOutput:
        """Encode, draw z ~ q(z|x) (or take its mean), and score the targets with the decoder
        (target-only: the output layer computes what the targets need).

        Word dropout applies to the decoder's inputs in training mode only: a model in ``eval()``
        mode ignores ``word_dropout_rate``. The encoder always reads the clean sentence.

        ``noise`` (a :class:`seqvae.distributed.StepNoise`): eps and the word-dropout draws, drawn
        beforehand for a global batch; without it they are drawn here from ``generator`` (the
        default one when None).
        """
        posterior = self.encode(batch)
        eps = noise.eps if noise is not None else None
        z, kl = posterior.sample_kl(generator) if eps is None else posterior.sample_kl(eps=eps)
        if use_mean:
            z = posterior.mean
        inputs = batch.inputs
        if self.training and word_dropout_rate > 0.0:
            uniforms = noise.word_dropout if noise is not None else None
            inputs = word_dropout(inputs, batch.mask, rate=word_dropout_rate, unk_id=self.unk_id, uniforms=uniforms)
        reconstruction = self.decoder.sequence_nll(inputs, z, batch.targets, batch.mask)
        return VAEOutput(reconstruction=reconstruction, posterior=posterior, z=z, kl=kl)


def build_model(config, *, vocab_size: int, pad_id: int = 0, unk_id: int = UNK_ID) -> SeqVAE:
    """Build a :class:`SeqVAE` from a :class:`~seqvae.config.ModelConfig`, any encoder with any decoder."""
    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder '{config.encoder}'; choices: {', '.join(ENCODERS)}")
    if config.decoder not in DECODERS:
        raise ValueError(f"unknown decoder '{config.decoder}'; choices: {', '.join(DECODERS)}")
    shared = {"vocab_size": vocab_size, "embedding_dim": config.embedding_dim, "hidden_dim": config.hidden_dim}
    shared.update(dropout=config.dropout, pad_id=pad_id)
    transformer = {
        "num_heads": config.num_heads,
        "ff_dim": config.ff_dim,
        "positions": config.positions,
        "max_positions": config.max_positions,
    }
    encoder = posterior = None
    if config.latent_dim > 0:
        if config.encoder == "lstm":
            encoder = ENCODERS["lstm"](**shared, num_layers=config.encoder_layers, bidirectional=config.bidirectional)
        else:
            encoder = ENCODERS[config.encoder](
                **shared, **transformer, num_layers=config.encoder_layers, pooling=config.pooling
            )
        gamma = config.posterior_gamma if config.posterior == "batchnorm" else None
        posterior = GaussianPosterior(
            input_dim=encoder.output_dim,
            latent_dim=config.latent_dim,
            batchnorm_gamma=gamma,
            flow=config.flow,
            flow_steps=config.flow_steps,
            flow_hidden=config.flow_hidden,
        )
    decoder_arguments = {
        **shared,
        "latent_dim": config.latent_dim,
        "num_layers": config.decoder_layers,
        "injection": config.injection,
        "tie_embeddings": config.tie_embeddings,
        "output_layer": config.output_layer,
        "adaptive_cutoffs": tuple(config.adaptive_cutoffs),
        "adaptive_div_value": config.adaptive_div_value,
    }
    if config.decoder == "transformer":
        decoder_arguments.update(transformer)
    else:
        decoder_arguments["weight_drop"] = config.weight_drop
    if config.output_layer == "adaptive":
        try:
            check_adaptive(
                config.adaptive_cutoffs,
                config.adaptive_div_value,
                vocab_size=vocab_size,
                in_features=config.embedding_dim if config.tie_embeddings else config.hidden_dim,
            )
        except ValueError as error:
            raise SeqVAEError(str(error)) from None
    decoder = DECODERS[config.decoder](**decoder_arguments)
    model = SeqVAE(encoder=encoder, posterior=posterior, decoder=decoder, unk_id=unk_id)
    initialise(model, config.init)
    return model
