"""A trained run as a Python object: encode, decode, sample, interpolate, evaluate.

>>> run = load_run("runs/quickstart")
>>> run.sample(3, seed=0)
>>> run.interpolate("the first sentence .", "the second one .", steps=5)

Everything is batched over sentences; decoding is greedy and incremental (seqvae.generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqvae.config import Config
from seqvae.data.batching import collate, encode_split
from seqvae.data.corpus import load_corpus
from seqvae.errors import SeqVAEError
from seqvae.data.synthetic import labels_path, read_labels
from seqvae.evaluation import evaluate_split, free_bits_target, latent_probe
from seqvae.generation import greedy_decode, linear_path, sample_prior
from seqvae.models.posterior import DiagonalGaussian
from seqvae.models.vae import SeqVAE
from seqvae.training import load_trained_model, prepare_data, resolve_device


@dataclass
class Run:
    """A model, its tokenizer and its config, loaded from a run directory."""

    model: SeqVAE
    tokenizer: Any
    config: Config
    run_dir: Path
    device: torch.device

    def _batch(self, sentences: list[str]):
        if not sentences or any(not sentence.strip() for sentence in sentences):
            raise SeqVAEError("sentences to encode must be non-empty")
        encoded = encode_split(
            self.tokenizer, sentences, max_length=self.config.data.max_length, policy="truncate"
        )
        return collate(encoded.sequences).to(self.device)

    @torch.no_grad()
    def encode(self, sentences: list[str], *, batch_size: int = 256) -> DiagonalGaussian:
        """q(z|x) for each sentence: mean and logvar (N, Z), in input order."""
        means, logvars = [], []
        for start in range(0, len(sentences), batch_size):
            posterior = self.model.encode(self._batch(sentences[start : start + batch_size]))
            means.append(posterior.mean)
            logvars.append(posterior.logvar)
        return DiagonalGaussian(mean=torch.cat(means), logvar=torch.cat(logvars))

    def decode(self, z: torch.Tensor, *, max_length: int = 50) -> list[str]:
        """Greedy decoding of codes z (N, Z) into sentences."""
        ids = greedy_decode(self.model.decoder, z.to(self.device), max_length=max_length)
        return [self.tokenizer.decode(row) for row in ids]

    def sample(self, num_samples: int, *, seed: int = 0, max_length: int = 50) -> list[str]:
        """Decode z ~ N(0, I): sentences from the prior."""
        generator = torch.Generator().manual_seed(seed)
        return self.decode(sample_prior(num_samples, self.model.latent_dim, generator=generator), max_length=max_length)

    def reconstruct(self, sentences: list[str], *, max_length: int = 50) -> list[str]:
        """Decode the posterior mean of each sentence."""
        return self.decode(self.encode(sentences).mean, max_length=max_length)

    def interpolate(self, first: str, second: str, *, steps: int = 5, max_length: int = 50) -> list[tuple[float, str]]:
        """Decode points on the line between the posterior means of two sentences (a homotopy,
        Bowman et al. 2016): (t, sentence) for ``steps`` values of t from 0 to 1."""
        means = self.encode([first, second]).mean
        t, path = linear_path(means[0], means[1], steps)
        return list(zip(t.tolist(), self.decode(path, max_length=max_length)))

    def evaluate(
        self,
        split: str = "test",
        *,
        seed: int = 0,
        batch_size: int | None = None,
        iw_samples: int = 500,
        mi_group_size: int | None = None,
        prior_samples: int = 100,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Every measure of :func:`seqvae.evaluation.evaluate_split` on a split of the run's corpus."""
        corpus = load_corpus(self.config.data)
        if split not in corpus.splits:
            raise SeqVAEError(f"split '{split}': the run's corpus has {', '.join(corpus.splits)}")
        data = prepare_data(self.config, corpus, self.tokenizer)
        batches = list(data.batches(split, batch_size or self.config.train.eval_batch_size))
        result = evaluate_split(
            self.model,
            batches,
            self.tokenizer,
            iw_samples=iw_samples,
            mi_group_size=mi_group_size,
            prior_samples=prior_samples,
            free_bits_target=free_bits_target(self.config.objective, self.model.latent_dim),
            seed=seed,
            progress=progress,
        )
        result["truncated"] = data.splits[split].truncated
        result["dropped"] = data.splits[split].dropped
        labels = self.labels(split, len(corpus.splits[split]))
        if labels is not None:
            result.update(latent_probe(self.encode(corpus.splits[split]).mean, labels, seed=seed))
        return result

    def labels(self, split: str, count: int | None = None) -> list[dict] | None:
        """The attribute labels of a split's sentences, from ``<split file>.labels.jsonl`` beside
        the text file (the embedded corpus writes them), or None when there is no such file."""
        source = getattr(self.config.data, split, "") if self.config.data.source == "text" else ""
        if not source or not labels_path(source).is_file():
            return None
        path = labels_path(source)
        try:
            labels = read_labels(path)
        except (ValueError, UnicodeDecodeError) as error:
            raise SeqVAEError(f"{path}: not a labels file ({error})") from None
        if not labels:
            raise SeqVAEError(f"{path}: holds no labels")
        if count is not None and len(labels) != count:
            raise SeqVAEError(f"{path}: {len(labels)} labels for {count} sentences in {source}")
        keys = set(labels[0])
        for line, record in enumerate(labels, start=1):
            if set(record) != keys:
                raise SeqVAEError(f"{path}: record {line} has attributes {sorted(record)}, the first has {sorted(keys)}")
        return labels


def load_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> Run:
    """Load a run directory written by :func:`seqvae.training.train`."""
    resolved = resolve_device(device)
    model, tokenizer, config = load_trained_model(run_dir, checkpoint=checkpoint, device=resolved)
    return Run(model=model, tokenizer=tokenizer, config=config, run_dir=Path(run_dir), device=resolved)
