"""A trained run as a Python object: encode, decode, sample, reconstruct, interpolate, attribute
vectors, evaluate.

>>> run = load_run("runs/quickstart")
>>> run.sample(3, seed=0)
>>> run.sample(3, decoding=Decoding("sample", top_p=0.9), seed=0)
>>> run.interpolate("the first sentence .", "the second one .", steps=5, path="slerp")

Everything is batched over sentences; decoding is incremental (seqvae.generation), greedy unless
a :class:`~seqvae.generation.Decoding` says otherwise.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from seqvae.config import Config
from seqvae.data.batching import collate, encode_split
from seqvae.data.corpus import load_corpus
from seqvae.errors import SeqVAEError
from seqvae.data.synthetic import labels_path, read_labels
from seqvae.evaluation import evaluate_split, free_bits_target, latent_probe
from seqvae.files import StorageError, atomic_write_with
from seqvae.fitted_prior import PRIOR_FILE, GaussianMixture, StandardNormal, fit_to_run, load_prior
from seqvae.homotopies import homotopy_measures
from seqvae.judge import judged_measures
from seqvae.generation import PATHS, Decoding, decode, ended, sample_prior
from seqvae.measures import self_log_likelihood_per_token
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior
from seqvae.models.vae import SeqVAE
from seqvae.progress import progress_bar
from seqvae.data.preparation import max_tokens, prepare_data
from seqvae.devices import resolve_device
from seqvae.run_directory import CheckpointInfo, load_checkpointed_model

CACHE_DIR = "cache"
"""Sub-directory of a run that keeps posterior means of sentence sets (Run.posterior_means)."""
CODE_CHUNK = 2048
"""Sentences encoded per step of posterior_means' progress."""


@dataclass(frozen=True)
class Generated:
    """A decoded sentence, its length in predicted tokens (<eos> included when the decode produced
    one) and log p(x|z) / tokens under the code it was decoded from."""

    text: str
    tokens: int
    log_prob_per_token: float


@dataclass
class Run:
    """A model, its tokenizer and its config, loaded from a run directory."""

    model: SeqVAE
    tokenizer: Any
    config: Config
    run_dir: Path
    device: torch.device
    checkpoint: CheckpointInfo | None = None
    """The checkpoint the model was loaded from (None for a model built in memory)."""

    def _batch(self, sentences: list[str]):
        if not sentences or any(not sentence.strip() for sentence in sentences):
            raise SeqVAEError("sentences to encode must be non-empty")
        encoded = encode_split(self.tokenizer, sentences, max_length=max_tokens(self.config), policy="truncate")
        return collate(encoded.sequences).to(self.device)

    @torch.no_grad()
    def encode(self, sentences: list[str], *, batch_size: int = 256) -> DiagonalGaussian | FlowPosterior:
        """q(z|x) for each sentence, in input order: ``.mean`` and ``.std`` are (N, Z). With a
        flow posterior, ``.mean`` is the image of the base mean under the flow (the code every
        decoding uses) and ``.std`` the base's; ``.rsample()`` draws through the flow."""
        self._needs_z("encode sentences into")
        parts = [self.model.encode(self._batch(sentences[start : start + batch_size])) for start in range(0, len(sentences), batch_size)]
        posterior = type(parts[0]).concatenate(parts)
        posterior.mean  # a flow's code is computed on first use: here, without gradients  # noqa: B018
        return posterior

    def unknown_share(self, sentences: list[str]) -> list[float]:
        """For each sentence, the share of its tokens the model does not know (they become <unk>)."""
        shares = []
        for sentence in sentences:
            ids = self.tokenizer.encode(sentence)
            shares.append(sum(token == self.tokenizer.unk_id for token in ids) / max(len(ids), 1))
        return shares

    def overlong(self, sentences: list[str]) -> tuple[int, int]:
        """How many sentences are longer than the model reads, and that length in tokens (0: no
        limit). Encoding truncates them there, as the run's length policy does for its splits."""
        limit = max_tokens(self.config)
        return (encode_split(self.tokenizer, sentences, max_length=limit).truncated if limit else 0), limit

    def _needs_z(self, what: str) -> None:
        if self.model.is_language_model:
            raise SeqVAEError(
                f"{self.run_dir}: a language model (model.latent_dim = 0) has no z to {what}; "
                "it can be evaluated and sampled (with --strategy sample) only"
            )

    def _decoding(self, decoding: Decoding | None, max_length: int | None) -> Decoding:
        decoding = decoding or Decoding()
        return replace(decoding, max_length=max_length) if max_length is not None else decoding

    @torch.no_grad()
    def generate(self, z: torch.Tensor, *, decoding: Decoding | None = None, seed: int = 0) -> list[Generated]:
        """Decode codes z (N, Z) by ``decoding`` (greedy by default; ``seed`` drives sampling), each
        sentence with its log p(x|z) per token under the code it came from."""
        decoding = decoding or Decoding()
        z = z.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ids = decode(self.model.decoder, z, decoding, generator=generator)
        done = ended(self.model.decoder, ids, decoding.max_length)
        scores = self_log_likelihood_per_token(self.model.decoder, z, ids, ended=done).tolist()
        return [Generated(self.tokenizer.decode(row), len(row) + end, score) for row, end, score in zip(ids, done, scores)]

    def decode(self, z: torch.Tensor, *, decoding: Decoding | None = None, seed: int = 0, max_length: int | None = None) -> list[str]:
        """Sentences decoded from codes z (N, Z); greedy unless ``decoding`` says otherwise."""
        return [g.text for g in self.generate(z, decoding=self._decoding(decoding, max_length), seed=seed)]

    def prior(self, num_samples: int, *, seed: int = 0, prior: str | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Codes (N, Z) from a generator seeded with ``seed``, drawn from ``prior``: ``standard``
        (z ~ N(0, I)) or ``fitted`` (the run's fitted prior, :meth:`fit_prior`); by default the
        config's ``prior.default``. ``temperature`` scales the prior's spread (below 1: nearer its
        modes, see :meth:`GaussianMixture.tempered`)."""
        generator = torch.Generator().manual_seed(seed)
        density = self.prior_density(prior, temperature=temperature)
        if isinstance(density, StandardNormal):  # a language model's codes: (N, 0)
            return sample_prior(num_samples, self.model.latent_dim, generator=generator)
        return density.sample(num_samples, generator)

    def prior_density(self, prior: str | None = None, *, temperature: float = 1.0) -> StandardNormal | GaussianMixture:
        """The density ``prior`` names (default: the config's ``prior.default``): N(0, I), or the
        run's fitted prior, which must have been fitted to the checkpoint this run loaded; at
        ``temperature``, its covariances times temperature^2."""
        name = prior or self.config.prior.default
        if name not in ("standard", "fitted"):
            raise SeqVAEError(f"prior '{name}': choose standard or fitted")
        if name == "standard":
            return StandardNormal(self.model.latent_dim).tempered(temperature)
        self._needs_z("draw codes for")
        mixture = load_prior(self.run_dir)
        fitted_to = mixture.fit.get("checkpoint", {})
        if self.checkpoint is not None and (fitted_to.get("file"), fitted_to.get("step")) != (self.checkpoint.path.name, self.checkpoint.step):
            raise SeqVAEError(
                f"{self.run_dir / PRIOR_FILE}: fitted to {fitted_to.get('file')} at step {fitted_to.get('step')}, but "
                f"{self.checkpoint.path.name} is at step {self.checkpoint.step}; fit it again with: seqvae prior {self.run_dir}"
                + ("" if self.checkpoint.path.name == "best.pt" else f" --checkpoint {self.checkpoint.path.stem}")
            )
        if mixture.dim != self.model.latent_dim:
            raise SeqVAEError(f"{self.run_dir / PRIOR_FILE}: {mixture.dim} dimensions, the model has {self.model.latent_dim}")
        return mixture.tempered(temperature)

    def has_fitted_prior(self) -> bool:
        """Whether the run holds a fitted prior for the checkpoint it loaded."""
        try:
            self.prior_density("fitted")
        except SeqVAEError:
            return False
        return True

    def fit_prior(
        self,
        *,
        components: tuple[int, ...] | None = None,
        covariance: tuple[str, ...] | None = None,
        codes: str | None = None,
        seed: int = 0,
        save: bool = True,
        progress: bool = False,
    ) -> GaussianMixture:
        """Fit the ex-post prior (seqvae.fitted_prior): a Gaussian mixture on the codes of the
        training set, each candidate of ``components`` x ``covariance`` (default: the config's
        ``[prior]``) fitted by EM and the best on the validation set's codes kept; saved as
        ``RUN/prior.json`` unless ``save`` is false. ``codes``: ``mean`` (posterior means) or
        ``sample`` (one z ~ q(z|x) per sentence)."""
        return fit_to_run(self, components=components, covariance=covariance, codes=codes, seed=seed, save=save, progress=progress)

    def sample(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        decoding: Decoding | None = None,
        max_length: int | None = None,
        prior: str | None = None,
        temperature: float = 1.0,
    ) -> list[str]:
        """Decode codes from the prior (``prior``: standard or fitted, default the config's
        ``prior.default``, at ``temperature``): sentences from the prior (``seed`` draws z and
        drives sampling)."""
        codes = self.prior(num_samples, seed=seed, prior=prior, temperature=temperature)
        return self.decode(codes, decoding=decoding, seed=seed, max_length=max_length)

    def reconstruct(
        self,
        sentences: list[str],
        *,
        sample_posterior: bool = False,
        seed: int = 0,
        decoding: Decoding | None = None,
        max_length: int | None = None,
    ) -> list[str]:
        """Encode and decode: the posterior mean of each sentence, or with ``sample_posterior`` a
        draw z ~ q(z|x)."""
        posterior = self.encode(sentences)
        z = posterior.rsample(torch.Generator(device=self.device).manual_seed(seed)) if sample_posterior else posterior.mean
        return self.decode(z, decoding=decoding, seed=seed, max_length=max_length)

    def interpolate_codes(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        *,
        steps: int = 5,
        path: str = "linear",
        decoding: Decoding | None = None,
        max_length: int | None = None,
    ) -> list[tuple[float, str]]:
        """Decode ``steps`` points of a path between two codes (Z,): (t, sentence) pairs."""
        self._needs_z("interpolate between")
        if path not in PATHS:
            raise SeqVAEError(f"path '{path}': choose {' or '.join(PATHS)}")
        t, codes = PATHS[path](start.to(self.device), end.to(self.device), steps)
        return list(zip(t.tolist(), self.decode(codes, decoding=decoding, max_length=max_length)))

    def interpolate(
        self,
        first: str,
        second: str,
        *,
        steps: int = 5,
        path: str = "linear",
        decoding: Decoding | None = None,
        max_length: int | None = None,
    ) -> list[tuple[float, str]]:
        """The homotopy of Bowman et al. 2016 between two sentences: decoded points of the
        ``linear`` or ``slerp`` (White 2016) path between their posterior means, t from 0 to 1."""
        means = self.encode([first, second]).mean
        return self.interpolate_codes(means[0], means[1], steps=steps, path=path, decoding=decoding, max_length=max_length)

    def homotopies(
        self, sentences: list[str], *, pairs: int = 50, steps: int = 7, path: str = "linear", seed: int = 0, judge=None
    ) -> dict[str, Any]:
        """Homotopy measures over ``pairs`` random pairs of ``sentences`` (drawn from ``seed``):
        each pair's path of ``steps`` points between the posterior means, greedily decoded, and
        :func:`~seqvae.measures.homotopy_endpoint_bleu` (do the ends decode to the two sentences?)
        and :func:`~seqvae.measures.homotopy_falling_share` (does BLEU to the second sentence fall
        along the way?). The sentences are compared in the tokenizer's form (unknown words as
        <unk>), as reconstruction BLEU compares them. ``judge`` (a language-model run,
        seqvae.judge) adds path fluency: its forward perplexity of the inner points' decodes and
        of the ends' decodes."""
        return homotopy_measures(self, sentences, pairs=pairs, steps=steps, path=path, seed=seed, judge=judge)

    def posterior_means(self, sentences: list[str], *, cache: bool = False, progress: bool = False) -> torch.Tensor:
        """The posterior means of ``sentences``, (N, Z). With ``cache`` they are kept in
        ``RUN/cache/`` under a key of the sentences' content and the checkpoint, so a large set
        is encoded once per checkpoint (a retrained run has a new key)."""
        self._needs_z("encode sentences into")
        path = self.run_dir / CACHE_DIR / f"means-{self._cache_key(sentences)}.pt" if cache else None
        if path is not None and path.is_file():
            try:
                means = torch.load(path, map_location=self.device, weights_only=True)
                if means.shape == (len(sentences), self.model.latent_dim):
                    return means
            except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
                pass  # an unreadable cache entry is recomputed and replaced
        chunks = range(0, len(sentences), CODE_CHUNK)
        bar = progress_bar(chunks, desc="encoding", unit="chunk", disable=not progress or len(chunks) < 2)
        means = torch.cat([self.encode(sentences[start : start + CODE_CHUNK]).mean for start in bar])
        if path is not None:
            try:
                path.parent.mkdir(exist_ok=True)
                atomic_write_with(path, lambda handle: torch.save(means.cpu(), handle))
            except (OSError, StorageError):  # a read-only or full run directory: the codes, just not cached
                pass
        return means

    def _cache_key(self, sentences: list[str]) -> str:
        digest = hashlib.sha256()
        if self.checkpoint is not None:  # the weights the codes come from: file, step and write time
            stat = self.checkpoint.path.stat()
            digest.update(f"{self.checkpoint.path.name}:{self.checkpoint.step}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
        digest.update("\n".join(sentences).encode("utf-8"))
        return digest.hexdigest()[:24]

    def attribute_vector(
        self, with_attribute: list[str], without_attribute: list[str], *, cache: bool = False, progress: bool = False
    ) -> torch.Tensor:
        """The mean posterior mean of sentences with an attribute minus that of sentences without
        it (the notes, section 3.3), (Z,); ``cache`` keeps both sets' codes with the run."""
        if not with_attribute or not without_attribute:
            raise SeqVAEError("an attribute vector needs sentences with the attribute and sentences without it")
        means = [self.posterior_means(sentences, cache=cache, progress=progress) for sentences in (with_attribute, without_attribute)]
        return means[0].mean(0) - means[1].mean(0)

    def apply_attribute(
        self,
        sentences: list[str],
        vector: torch.Tensor,
        *,
        scale: float = 1.0,
        decoding: Decoding | None = None,
        max_length: int | None = None,
    ) -> list[str]:
        """Decode each sentence's posterior mean plus ``scale`` times an attribute vector."""
        z = self.encode(sentences).mean + scale * vector.to(self.device)
        return self.decode(z, decoding=decoding, max_length=max_length)

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
        world=None,
        fitted_prior: bool | None = None,
        homotopy_pairs: int = 50,
        judge=None,
        judge_options: dict[str, int] | None = None,
        prior_temperature: float = 1.0,
    ) -> dict[str, Any]:
        """Every measure of :func:`seqvae.evaluation.evaluate_split` on a split of the run's corpus.

        ``fitted_prior``: also the IW bound and the prior-sample measures under the run's fitted
        prior (``*_fitted``); by default when the run holds one for this checkpoint.
        ``prior_temperature``: the fitted prior's, for both (N(0, I) stays the model's prior).
        ``homotopy_pairs``: pairs of the split's sentences for :meth:`homotopies` (0 skips them).
        ``judge`` (a language-model run) adds :func:`seqvae.judge.judged_measures` (its keywords
        from ``judge_options``) and the homotopies' path fluency.

        ``world`` (a :class:`seqvae.distributed.World` of several torchrun ranks, every rank
        calling): the ranks share the batches, and the figures are one process's; with a flow
        posterior rank 0 measures them and sends them to the others."""
        corpus = load_corpus(self.config.data)
        if split not in corpus.splits:
            raise SeqVAEError(f"split '{split}': the run's corpus has {', '.join(corpus.splits)}")
        data = prepare_data(self.config, corpus, self.tokenizer)
        batches = list(data.batches(split, batch_size or self.config.train.eval_batch_size))
        parallel = world is not None and world.parallel
        shared = parallel and (self.model.is_language_model or self.model.posterior.flow is None)
        if fitted_prior is None:
            fitted_prior = not self.model.is_language_model and self.has_fitted_prior()
        density = self.prior_density("fitted", temperature=prior_temperature) if fitted_prior else None

        def measure():
            return evaluate_split(
                self.model,
                batches,
                self.tokenizer,
                iw_samples=iw_samples,
                mi_group_size=mi_group_size,
                prior_samples=prior_samples,
                free_bits_target=free_bits_target(self.config.objective, self.model.latent_dim),
                seed=seed,
                progress=progress,
                words=data.splits[split].words,
                world=world if shared else None,
                fitted_prior=density,
                real_reference=True,
            )

        result = world.broadcast(measure() if world.main else None) if parallel and not shared else measure()
        if density is not None and prior_temperature != 1:
            result["fitted_prior"] += f", temperature {prior_temperature:g}"
            result["fitted_prior_temperature"] = prior_temperature
        result["truncated"] = data.splits[split].truncated
        result["dropped"] = data.splits[split].dropped
        if homotopy_pairs and not self.model.is_language_model and len(corpus.splits[split]) >= 2:
            result.update(self.homotopies(corpus.splits[split], pairs=homotopy_pairs, seed=seed, judge=judge))
        if judge is not None and not self.model.is_language_model:
            priors = ("standard", "fitted") if fitted_prior else ("standard",)
            result.update(judged_measures(self, judge, split, corpus.splits[split], priors=priors, seed=seed,
                                          progress=progress, fitted_temperature=prior_temperature, **(judge_options or {})))
        labels = None if self.model.is_language_model else self.labels(split, len(corpus.splits[split]))
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
    """Load a run directory written by :func:`seqvae.training.train`, a model folder written by
    ``seqvae export``, or such a folder on the Hugging Face hub, ``"hf://OWNER/NAME[@REVISION]"``
    (seqvae.hub: fetched into a working folder, which becomes ``run_dir``)."""
    from seqvae.hub import local_run

    run_dir = local_run(run_dir)
    resolved = resolve_device(device)
    model, tokenizer, config, info = load_checkpointed_model(run_dir, checkpoint=checkpoint, device=resolved)
    return Run(model=model, tokenizer=tokenizer, config=config, run_dir=Path(run_dir), device=resolved, checkpoint=info)
