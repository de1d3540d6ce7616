"""Under torchrun (seqvae.distributed): every rank starts from rank 0's weights, trains on its
share of each global batch with the global batch's noise (:class:`~seqvae.distributed.RankShare`),
and the ranks agree on every stop request with each step's figures. A run started by torchrun as
one process takes this path as well (its noise is drawn the same way)."""

from __future__ import annotations

import torch

from seqvae.data.batching import collate
from seqvae.distributed import RankShare, StepNoise, shard_rows
from seqvae.training.parts import Part


class DataParallel(Part):
    def __init__(self, trainer) -> None:
        self.forward = None  # the DistributedDataParallel module, once start() made it

    def start(self, trainer) -> None:
        """With several ranks: rank 0's weights to every rank, and the model wrapped in
        DistributedDataParallel (with SyncBatchNorm for BN-VAE on CUDA). Aggressive training, which
        updates the encoder and the decoder apart, averages its gradients itself
        (RankShare.average_gradients) instead."""
        world, config, device = trainer.world, trainer.config, trainer.device
        if not world.parallel:
            return
        for tensor in trainer.model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
        if config.train.aggressive:
            return
        module = trainer.model
        if device.type == "cuda" and config.model.posterior == "batchnorm":
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        self.forward = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            # the adaptive softmax computes a tail cluster only when a target of the rank's rows lies in it
            find_unused_parameters=config.model.output_layer == "adaptive",
        )

    def take(self, trainer, indices: list[int]):
        """This rank's rows of the batch, with the global batch's noise."""
        world, device = trainer.world, trainer.device
        sequences = trainer.data.splits["train"].sequences
        rows = shard_rows(len(indices), world)
        kept = rows or [0]  # a stand-in row at weight 0 when the batch has fewer sentences than ranks
        batch = collate([sequences[indices[row]] for row in kept]).to(device)
        rate = trainer.config.objective.word_dropout
        noise = StepNoise.draw(
            trainer.noise_generator,
            sentences=len(indices),
            width=max(len(sequences[i]) for i in indices) + 1,
            latent_dim=trainer.model.latent_dim,
            rows=kept,
            row_width=batch.inputs.shape[1],
            word_dropout=0.0 < rate < 1.0,
            device=device,
        )
        return batch, RankShare(
            world=world,
            noise=noise,
            rows=len(rows),
            sentences=len(indices),
            tokens=sum(len(sequences[i]) + 1 for i in indices),
            device=device,
            forward=self.forward,
            flags=trainer.stops.flags(trainer.state.seconds()),
        )

    def after_update(self, trainer, share) -> None:
        if share is not None:
            trainer.stops.agree(share.summed_flags)
