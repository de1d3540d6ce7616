"""Typed run configuration: frozen dataclasses per section, loaded from TOML with dotted overrides.

A config file has the sections ``[run]``, ``[data]``, ``[tokenizer]``, ``[model]``,
``[objective]``, ``[annealing]``, ``[train]`` and ``[prior]``; every key is a field below with a default, so a
file names only what differs. ``load_config(path, ["model.latent_dim=32"])`` applies command-line
overrides after the file. An unknown section or key, a value of the wrong type, or a name outside
a field's choices raises :class:`~seqvae.errors.SeqVAEError` naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqvae.errors import SeqVAEError

FREE_BITS = ("none", "per_dimension", "per_example", "total_hinge", "mdr")
"""The free-bits variants of ``objective.free_bits`` (seqvae.losses computes them)."""
PER_DIMENSION_FREE_BITS = ("per_dimension", "per_example")
"""The variants that need the KL of each latent dimension (a flow posterior has none)."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Where the run lives and how it is seeded."""

    dir: str = "runs/default"
    """Run directory: resolved config, tokenizer, checkpoints, metrics."""
    seed: int = 0
    """One seed for parameters, data order, sampling and word dropout."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    threads: int = 0
    """CPU threads for torch; 0 picks the CPUs this process may use less those busy when it starts
    (seqvae.threads: two processes with a thread per core each slow each other down threefold).
    The count a training used is saved in its config (results can differ in the last bits
    between counts), and resuming or evaluating the run uses it again. Under torchrun, per rank."""
    tensorboard: bool = False
    """Write live curves to ``RUN/tensorboard/`` (seqvae.training.watching; needs the
    ``tensorboard`` extra): each logged window's terms, the gradient norm and tokens per second,
    each validation's figures, the per-dimension KL and a few decodes. Rank 0 writes them."""
    distributed_backend: str = "auto"
    """Under torchrun (data-parallel training, seqvae.distributed): the process-group backend,
    ``auto`` (nccl on CUDA, gloo on the CPU), ``gloo`` or ``nccl``. Without torchrun, unused."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the sentences come from and how long they may be."""

    source: str = "text"
    """``text``: local plain-text files, one sentence per line; ``hub``: a Hugging Face dataset."""
    train: str = ""
    """Training file (``text``); relative paths are taken from the current directory."""
    valid: str = ""
    """Validation file (``text``)."""
    test: str = ""
    """Test file (``text``); optional."""
    hub_name: str = ""
    """Dataset name on the Hugging Face hub (``hub``)."""
    hub_config: str = ""
    """Dataset configuration name on the hub (``hub``), if it has several."""
    text_column: str = "text"
    """Column holding the sentence (``hub``)."""
    train_split: str = "train"
    """The hub dataset's split for training (``hub``)."""
    valid_split: str = "validation"
    """The hub dataset's split for validation (``hub``)."""
    test_split: str = "test"
    """The hub dataset's split for testing (``hub``); skipped when the dataset has none."""
    lowercase: bool = False
    """Lower-case every sentence before tokenization."""
    max_length: int = 0
    """Longest sentence in tokens (EOS not counted); 0 for no limit."""
    length_policy: str = "truncate"
    """What happens to longer sentences: ``truncate`` to max_length tokens or ``drop`` them."""


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Word vocabulary or SentencePiece, built from the training split."""

    kind: str = "word"
    """``word`` (whitespace-split vocabulary) or ``sentencepiece``."""
    min_frequency: int = 1
    """Word vocabulary: words seen fewer times map to ``<unk>``."""
    max_size: int = 0
    """Word vocabulary: keep the most frequent words, specials included; 0 for no limit."""
    model_type: str = "unigram"
    """SentencePiece algorithm: ``unigram`` or ``bpe``."""
    vocab_size: int = 8000
    """SentencePiece vocabulary size, specials included."""
    character_coverage: float = 1.0
    """SentencePiece: share of characters covered by the model."""
    from_run: str = ""
    """A run directory whose saved tokenizer this run uses instead of building one from its training
    split (the keys above are then ignored): runs that share a vocabulary, such as a language model
    trained on another model's generated text to be scored on real sentences (reverse perplexity)."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Encoder, posterior and decoder sizes and choices."""

    encoder: str = "lstm"
    decoder: str = "lstm"
    embedding_dim: int = 256
    """Width of the encoder's and the decoder's token embeddings."""
    hidden_dim: int = 256
    """Width of the LSTM states, or of the Transformer blocks."""
    latent_dim: int = 32
    """Dimensions of z; 0 trains the decoder alone as a language model (no encoder, no z, no KL:
    its NLL and perplexity are exact, and every measure that needs z is reported as absent)."""
    posterior: str = "gaussian"
    """q(z|x): ``gaussian`` (a linear map to mean and log-variance) or ``batchnorm`` (BN-VAE, Zhu
    et al. 2020: the means batch-normalised with a fixed scale posterior_gamma and a learned shift,
    which keeps the batch-mean KL above about latent_dim * posterior_gamma^2 / 2)."""
    posterior_gamma: float = 0.7
    """BN-VAE: the fixed scale of the normalised posterior means (Zhu et al. 2020 compare 0.5 to 0.7)."""
    flow: str = "none"
    """A normalizing flow on the Gaussian posterior (seqvae.models.flows): ``none``, ``iaf``
    (inverse autoregressive flow, Kingma et al. 2016) or ``planar`` (Rezende & Mohamed 2015). With
    a flow the KL is the single-sample Monte-Carlo estimate log q(z|x) - log p(z) on the z the
    decoder reads, so per-dimension free bits do not apply (use total_hinge or mdr)."""
    flow_steps: int = 2
    """Flow steps (0: the Gaussian itself, exactly)."""
    flow_hidden: int = 320
    """IAF: width of each step's masked autoregressive network (at least latent_dim)."""
    encoder_layers: int = 1
    """Encoder layers (LSTM layers or Transformer blocks)."""
    bidirectional: bool = False
    """Bidirectional LSTM encoder (both final states feed the posterior)."""
    decoder_layers: int = 1
    """Decoder layers (LSTM layers or Transformer blocks)."""
    injection: tuple[str, ...] = ("initial_state", "concat")
    """How z enters the decoder (seqvae.models.decoders): for ``lstm`` any of ``initial_state``,
    ``concat``, ``add``; for ``transformer`` any of ``add``, ``memory``, ``prefix``."""
    init: str = "pytorch"
    """Parameter initialisation (seqvae.models.init): ``pytorch`` (each module's default) or
    ``uniform`` (the He et al. 2019 / Li et al. 2019 code's: embeddings U(-0.1, 0.1), every LSTM and
    linear weight and bias U(-0.01, 0.01); normalisation layers and flows keep their own)."""
    tie_embeddings: bool = False
    """Share the decoder's input embedding with its output projection (with the adaptive layer:
    the head's rows for the words before the first cutoff). Use it with ``init = "uniform"``:
    PyTorch's N(0, 1) embedding as the output matrix starts from huge logits. With the full
    softmax it is the better decoder: on PTB (recipes/ptb/RESULTS.md) the untied full softmax
    overfits under Adam (validation NLL 106.3 nats per sentence) where the tied one reaches 101.9."""
    output_layer: str = "softmax"
    """The decoder's output layer (seqvae.models.output_layer), both exact distributions over the
    whole vocabulary: ``softmax`` (full softmax) or ``adaptive`` (adaptive softmax, Grave et al.
    2017: a head for the most frequent words and smaller tail clusters, several times cheaper to
    train and score at a 10k vocabulary on a CPU; on a GPU, where a step is bound by kernel
    launches, the full softmax is faster)."""
    adaptive_cutoffs: tuple[int, ...] = (2000, 6000)
    """Adaptive layer: token ids (ordered by training frequency) where the head ends and each
    tail cluster begins; every cutoff below the vocabulary size."""
    adaptive_div_value: float = 4.0
    """Adaptive layer: tail cluster i reads features projected to F / div_value^i dimensions."""
    dropout: float = 0.0
    """Dropout on embeddings and decoder outputs, and inside Transformer blocks (not word dropout)."""
    weight_drop: float = 0.0
    """LSTM decoder: DropConnect on its hidden-to-hidden weights (Wan et al. 2013), one mask per
    batch shared by every time step, the weight-dropped LSTM of Merity et al. 2018 (AWD-LSTM): a
    regulariser of the recurrence that, unlike dropout on the states, leaves the cuDNN/fused LSTM
    kernel in use. 0 turns it off; decoding and evaluation use the whole weights."""
    num_heads: int = 4
    """Transformer: attention heads (hidden_dim must be divisible by it)."""
    ff_dim: int = 1024
    """Transformer: width of the feed-forward layer of each block."""
    positions: str = "learned"
    """Transformer: ``learned`` position embeddings or ``sinusoidal`` encodings."""
    max_positions: int = 512
    """Transformer with learned positions: the longest sequence (prefix included)."""
    pooling: str = "mean"
    """Transformer encoder: sentence summary by ``mean`` over real tokens or a ``summary_token``."""


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """Remedies against posterior collapse inside the loss."""

    word_dropout: float = 0.0
    """Probability of replacing a decoder input token by <unk> in training (Bowman et al. 2016)."""
    free_bits: str = "per_dimension"
    """``none``, ``per_dimension`` (Kingma et al. 2016; the default, with free_bits_lambda 0.1 and the
    linear KL warm-up: without them a config of only [data] collapsed; with them every unit stayed
    active and the IW bound was no worse than the collapsed model's; README, "Your own corpus"),
    ``per_example`` (Li et al. 2019's code, "fb=2": each example's dimension with KL at most
    free_bits_lambda is left out of the KL term), ``total_hinge`` (the notes, 4.3) or ``mdr`` (minimum desired rate, Pelsmaeker & Aziz 2020: the constraint KL >= free_bits_lambda
    enforced by a Lagrange multiplier learned by gradient ascent)."""
    free_bits_lambda: float = 0.1
    """Free-bits target in nats: per dimension (``per_dimension``, ``per_example``), or for the total KL with ``total_hinge``, or the
    target rate r with ``mdr``."""
    mdr_learning_rate: float = 0.001
    """``mdr``: learning rate of the multiplier's gradient ascent (RMSprop, as in the authors' code)."""
    mdr_initial_multiplier: float = 1.0
    """``mdr``: the multiplier's starting value (the authors start near 1)."""


@dataclass(frozen=True, kw_only=True)
class AnnealingConfig:
    """The KL weight beta as a pure function of the global step (seqvae.annealing)."""

    schedule: str = "linear"
    """``linear`` (the default) or ``logistic`` warm-up (monotonic annealing, Bowman et al. 2016),
    ``constant`` (beta-VAE, Higgins et al. 2017; beta = 0 is the autoencoder stage of Li et al.
    2019) or ``cyclical`` (Fu et al. 2019)."""
    beta: float = 1.0
    """The constant weight, or the value the other schedules rise to."""
    start: float = 0.0
    """Linear: the weight at step 0."""
    warmup_steps: int = 2000
    """Linear: steps from start to beta."""
    logistic_rate: float = 0.0025
    """Logistic: slope k of beta / (1 + exp(-k (step - midpoint)))."""
    logistic_midpoint: int = 2500
    """Logistic: the step at which the weight is beta / 2."""
    cycle_steps: int = 10000
    """Cyclical: steps in one cycle."""
    cycle_ratio: float = 0.5
    """Cyclical: share of each cycle spent rising from 0 to beta."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, batching and checkpointing."""

    epochs: int = 10
    """Passes over the training set."""
    max_steps: int = 0
    """Stop after this many optimizer steps in all; 0 for no limit."""
    max_minutes: float = 0.0
    """Stop once training has taken this many minutes in all (resumed sittings add up; validation
    counts), then validate and keep best.pt as at an epoch's end; 0 for no limit."""
    batch_size: int = 32
    """Sentences per training batch; under torchrun the global batch, shared by the ranks (each
    trains on about batch_size / WORLD_SIZE sentences of it), so a run's batches do not depend on
    the number of processes."""
    precision: str = "auto"
    """Arithmetic of the training forward: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast
    with a gradient scaler, CUDA only), as standard mixed precision runs them: matrix products
    in the low type, the log-softmax, the posterior moments, the KL and the loss in fp32.
    ``auto`` (seqvae.precision) picks bf16 on a GPU that supports it and on a CPU with native bf16
    units where a timed probe of this model's step finds it faster, fp32 otherwise; the choice
    and its reason are printed, saved in the run's config and kept on resume. Evaluation always
    runs in fp32 (benchmarks/README.md has the speeds and the curves)."""
    cuda_graphs: bool = False
    """CUDA only: replay each training step's forward and backward pass from a CUDA graph, one per
    batch shape (seqvae.cuda_graphs), so that the host does not launch each kernel; for the small
    models whose GPU step is bound by launches. Needs the full softmax (``model.output_layer``);
    not with a bidirectional LSTM encoder, fp16, aggressive training, ``mdr`` or torchrun."""
    cuda_graph_width: int = 8
    """With cuda_graphs: batch widths are padded up to a multiple of this, so that a corpus has
    few shapes to capture (exact: padding is masked); 1 captures every width as it is."""
    eval_batch_size: int = 128
    """Sentences per batch in validation and evaluation. A batch holds at most eval_batch_size x 128
    padded tokens, so sentences over 128 tokens go in smaller batches (a whole document on one line
    does not pad a full batch to its length)."""
    optimizer: str = "adam"
    """``adam`` (Kingma & Ba 2015) or ``sgd`` (plain, no momentum, as in the He et al. 2019 and
    Li et al. 2019 code, which used 1.0 and 0.5). Give SGD their ``model.init = "uniform"``: from
    PyTorch's N(0, 1) embeddings it crawls (PTB language model, full softmax: validation NLL 114.9
    nats per sentence after 10 epochs, against 104.4 from the uniform init; recipes/ptb/RESULTS.md)."""
    learning_rate: float = 1e-3
    """The optimizer's learning rate."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    lr_decay: str = "none"
    """``none``, ``plateau`` (multiply the rate by lr_decay_factor when validation stalls) or
    ``wsd`` (warm-up, stable, decay: a pure function of the step for a run of known length,
    train.max_steps; the rate rises linearly over lr_warmup_steps, stays at learning_rate, and
    falls linearly to min_learning_rate over the last lr_decay_steps; Hu et al. 2024, MiniCPM)."""
    lr_warmup_steps: int = 0
    """``wsd``: steps of the linear rise from 0 to learning_rate."""
    lr_decay_steps: int = 0
    """``wsd``: the last steps before train.max_steps, over which the rate falls linearly to
    min_learning_rate."""
    lr_decay_factor: float = 0.5
    """``plateau``: the factor the rate is multiplied by at each decay."""
    lr_patience: int = 2
    """``plateau``: stalled epochs tolerated; the rate decays at the end of the
    (lr_patience + 1)-th epoch in a row that does not beat the best validation figure the rule has
    seen (``torch.optim.lr_scheduler.ReduceLROnPlateau``'s patience, relative threshold 1e-4).
    The He et al. 2019 / Li et al. 2019 code decays after lr_patience such epochs: one sooner."""
    min_learning_rate: float = 1e-5
    """``plateau``: the rate never decays below this; ``wsd``: the rate at the last step."""
    lr_decay_start: int = 0
    """``plateau``: epochs the rule ignores; it sees the validation figure from epoch
    lr_decay_start + 1 on, so with 15 and patience 2 the first decay can come at epoch 19 (He et
    al. 2019 and Li et al. 2019 decay from epoch 15 on, past the KL warm-up, whose rising weight
    makes the early validation bound rise, counting stalls from the first epoch)."""
    lr_decay_reload_best: bool = False
    """``plateau``: at each decay, go back to best.pt's weights and optimizer state (at the new
    rate) before the next epoch, as the He et al. and Li et al. code does."""
    stop_after_decays: int = 0
    """``plateau``: end training after the epoch of this many decays (Li et al. 2019: 5); 0 for no
    such stop (train.epochs still caps the run)."""
    bucket_batches: int = 50
    """Length buckets are drawn from pools of this many batches of shuffled sentences."""
    log_every: int = 50
    """Write training metrics every this many steps."""
    checkpoint_every: int = 0
    """Also write the last checkpoint every this many steps; 0 for epoch ends only."""
    best_metric: str = "elbo"
    """Validation measure that picks best.pt: ``elbo`` (rec + KL, the NLL bound) or ``rec``
    (for autoencoders, beta = 0, whose KL is unbounded)."""
    validation: str = "full"
    """Measures after each epoch: ``full``, every measure of ``seqvae eval`` (IW bound with
    validation_iw_samples, MI, active units, teacher-forced vs free-running, BLEU, prior samples,
    diagnostics); ``elbo``, rec, KL, ELBO, active units and the diagnostics only (cheapest)."""
    validation_iw_samples: int = 10
    """K of the importance-weighted bound after each epoch (``seqvae eval`` uses 500); 0 skips it."""
    validation_prior_samples: int = 100
    """Prior samples decoded after each epoch for distinct-n, self-BLEU, log p(x|z); 0 skips them."""
    init_from: str = ""
    """Warm start (Li et al. 2019): a run directory whose best checkpoint gives the parts named in
    init_parts; the other parts start afresh from run.seed. The vocabularies must match."""
    init_parts: tuple[str, ...] = ("encoder", "posterior")
    """Warm start: the parts copied from init_from, any of ``encoder``, ``posterior``, ``decoder``,
    or ``posterior.projection``: the posterior's Gaussian projection alone, where this run's
    posterior adds to it what the other run's has not (a flow, batch normalisation), which starts
    afresh."""
    aggressive: bool = False
    """Aggressive inference-network training (He et al. 2019): before each decoder update, the
    encoder and posterior alone are updated on random training batches until their loss stops
    improving; switched off for good after the first epoch whose validation MI does not rise."""
    aggressive_max_inner_steps: int = 100
    """Aggressive: the most encoder-only updates before one decoder update."""
    aggressive_check_every: int = 15
    """Aggressive: every this many inner steps, the mean loss per token of the last window is
    compared with the window before; the inner loop stops when it did not fall."""


@dataclass(frozen=True, kw_only=True)
class PriorConfig:
    """The density codes are drawn from for sampling and prior interpolation (seqvae.fitted_prior):
    N(0, I), or a Gaussian mixture fitted after training to the training set's codes."""

    fit: bool = True
    """After training, fit the mixture to the best checkpoint's codes (``RUN/prior.json``); for
    any run, ``seqvae prior RUN`` fits it on demand."""
    default: str = "standard"
    """The prior that ``seqvae sample``, ``interpolate --prior`` and ``Run.sample`` draw from
    unless told: ``standard`` (N(0, I)) or ``fitted``."""
    components: tuple[int, ...] = (1, 4, 16)
    """Numbers of mixture components tried; the candidate with the best mean log-likelihood of the
    validation set's codes is kept."""
    covariance: tuple[str, ...] = ("diagonal", "full")
    """Covariances tried for every number of components."""
    codes: str = "sample"
    """What is fitted: one ``sample`` z ~ q(z|x) per training sentence (the mixture then estimates
    the aggregate posterior q(z), the prior that fits the encoder best), or each sentence's
    posterior ``mean`` (Ghosh et al. 2020's deterministic autoencoders). Means lie closer together
    than samples; a density fitted to them gives a poor bound where posteriors are wide."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole resolved configuration of a run."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    annealing: AnnealingConfig = field(default_factory=AnnealingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "run.device": ("auto", "cpu", "cuda"),
    "run.distributed_backend": ("auto", "gloo", "nccl"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "data.source": ("text", "hub"),
    "data.length_policy": ("truncate", "drop"),
    "tokenizer.kind": ("word", "sentencepiece"),
    "tokenizer.model_type": ("unigram", "bpe"),
    "model.encoder": ("lstm", "transformer"),
    "model.decoder": ("lstm", "transformer"),
    "model.injection": ("initial_state", "concat", "add", "memory", "prefix"),
    "model.positions": ("learned", "sinusoidal"),
    "model.pooling": ("mean", "summary_token"),
    "model.output_layer": ("softmax", "adaptive"),
    "model.init": ("pytorch", "uniform"),
    "model.posterior": ("gaussian", "batchnorm"),
    "model.flow": ("none", "iaf", "planar"),
    "objective.free_bits": FREE_BITS,
    "annealing.schedule": ("constant", "linear", "logistic", "cyclical"),
    "train.lr_decay": ("none", "plateau", "wsd"),
    "train.optimizer": ("adam", "sgd"),
    "train.best_metric": ("elbo", "rec"),
    "train.validation": ("full", "elbo"),
    "train.init_parts": ("encoder", "posterior", "posterior.projection", "decoder"),
    "prior.default": ("standard", "fitted"),
    "prior.covariance": ("diagonal", "full"),
    "prior.codes": ("mean", "sample"),
}
"""Names a string field (or each item of a tuple field) may take."""

PATH_KEYS = ("data.train", "data.valid", "data.test", "train.init_from", "tokenizer.from_run")
"""Keys holding file or folder paths, made absolute (from the current directory) when a config is loaded."""


def _section_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """Check a TOML value against the field type; ints are accepted where floats are."""
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan or inf: no setting means it, and nan slips past every range check
                raise SeqVAEError(f"config key '{key}': value {value} is not a finite number")
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(expected) is tuple:
        item_type = typing.get_args(expected)[0]
        if isinstance(value, str) and item_type is str:
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, (list, tuple)) and all(
            isinstance(item, item_type) and not isinstance(item, bool) for item in value
        ):
            return tuple(value)
    type_name = getattr(expected, "__name__", str(expected))
    if typing.get_origin(expected) is tuple:
        type_name = "list of strings" if typing.get_args(expected)[0] is str else "list of integers"
    raise SeqVAEError(f"config key '{key}': expected {type_name}, got {value!r}")


def _parse_override_value(key: str, text: str, expected: Any) -> Any:
    """Turn the text after '=' into a value of the field's type."""
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise SeqVAEError(f"override '{key}={text}': expected true or false")
    if expected is int:
        try:
            return int(text)
        except ValueError:
            raise SeqVAEError(f"override '{key}={text}': expected an integer") from None
    if expected is float:
        try:
            return float(text)
        except ValueError:
            raise SeqVAEError(f"override '{key}={text}': expected a number") from None
    if typing.get_origin(expected) is tuple:
        items = [item.strip() for item in text.strip().strip("[]").split(",") if item.strip()]
        if typing.get_args(expected)[0] is int:
            try:
                return tuple(int(item) for item in items)
            except ValueError:
                raise SeqVAEError(f"override '{key}={text}': expected comma-separated integers, e.g. 2000,6000") from None
        return tuple(items)
    return text


def _check_choices(key: str, value: Any) -> None:
    choices = CHOICES.get(key)
    if choices is None:
        return
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if item not in choices:
            raise SeqVAEError(f"config key '{key}': '{item}' is not one of {', '.join(choices)}")


def _increasing(values: tuple[int, ...]) -> bool:
    return bool(values) and values[0] >= 1 and all(b > a for a, b in zip(values, values[1:]))


def _check_ranges(config: Config) -> None:
    checks = [
        ("model.embedding_dim", config.model.embedding_dim >= 1),
        ("model.hidden_dim", config.model.hidden_dim >= 1),
        ("model.latent_dim", config.model.latent_dim >= 0),
        ("model.flow_steps", config.model.flow_steps >= 0),
        ("model.flow_hidden", config.model.flow_hidden >= max(1, config.model.latent_dim)),
        ("model.posterior_gamma", config.model.posterior_gamma > 0.0 and math.isfinite(config.model.posterior_gamma)),
        ("model.encoder_layers", config.model.encoder_layers >= 1),
        ("model.decoder_layers", config.model.decoder_layers >= 1),
        ("model.dropout", 0.0 <= config.model.dropout < 1.0),
        ("model.weight_drop", 0.0 <= config.model.weight_drop < 1.0),
        ("model.num_heads", config.model.num_heads >= 1),
        ("model.ff_dim", config.model.ff_dim >= 1),
        ("model.max_positions", config.model.max_positions >= 2),
        ("model.adaptive_cutoffs", _increasing(config.model.adaptive_cutoffs)),
        ("model.adaptive_div_value", config.model.adaptive_div_value >= 1.0),
        ("objective.word_dropout", 0.0 <= config.objective.word_dropout <= 1.0),
        ("objective.free_bits_lambda", config.objective.free_bits_lambda >= 0.0),
        ("objective.mdr_learning_rate", config.objective.mdr_learning_rate > 0.0),
        ("objective.mdr_initial_multiplier", math.isfinite(config.objective.mdr_initial_multiplier)),
        ("annealing.beta", config.annealing.beta >= 0.0 and math.isfinite(config.annealing.beta)),
        ("annealing.warmup_steps", config.annealing.warmup_steps >= 0),
        ("annealing.cycle_steps", config.annealing.cycle_steps >= 1),
        ("annealing.cycle_ratio", 0.0 < config.annealing.cycle_ratio <= 1.0),
        ("run.threads", config.run.threads >= 0),
        ("train.epochs", config.train.epochs >= 1),
        ("prior.components", _increasing(config.prior.components)),
        ("prior.covariance", len(config.prior.covariance) >= 1),
        ("train.max_steps", config.train.max_steps >= 0),
        ("train.lr_decay_start", config.train.lr_decay_start >= 0),
        ("train.lr_warmup_steps", config.train.lr_warmup_steps >= 0),
        ("train.lr_decay_steps", config.train.lr_decay_steps >= 0),
        ("train.stop_after_decays", config.train.stop_after_decays >= 0),
        ("train.max_minutes", config.train.max_minutes >= 0.0 and math.isfinite(config.train.max_minutes)),
        ("train.batch_size", config.train.batch_size >= 1),
        ("train.eval_batch_size", config.train.eval_batch_size >= 1),
        ("train.cuda_graph_width", config.train.cuda_graph_width >= 1),
        ("train.learning_rate", config.train.learning_rate > 0.0),
        ("train.grad_clip", config.train.grad_clip >= 0.0),
        ("train.bucket_batches", config.train.bucket_batches >= 1),
        ("train.log_every", config.train.log_every >= 1),
        ("train.checkpoint_every", config.train.checkpoint_every >= 0),
        ("train.validation_iw_samples", config.train.validation_iw_samples >= 0),
        ("train.aggressive_max_inner_steps", config.train.aggressive_max_inner_steps >= 1),
        ("train.aggressive_check_every", config.train.aggressive_check_every >= 1),
        ("train.validation_prior_samples", config.train.validation_prior_samples in (0,) or config.train.validation_prior_samples >= 2),
        ("data.max_length", config.data.max_length >= 0),
        ("tokenizer.min_frequency", config.tokenizer.min_frequency >= 1),
        ("tokenizer.max_size", config.tokenizer.max_size == 0 or config.tokenizer.max_size > 4),
        ("tokenizer.vocab_size", config.tokenizer.vocab_size > 4),
    ]
    for key, ok in checks:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            raise SeqVAEError(f"config key '{key}': value {value!r} is out of range")
    _check_methods(config)
    from seqvae.models.decoders import INJECTIONS

    allowed = INJECTIONS[config.model.decoder]
    wrong = [name for name in config.model.injection if name not in allowed]
    if wrong or not config.model.injection:
        raise SeqVAEError(
            f"config key 'model.injection': {', '.join(wrong) or '(none)'} does not apply to the "
            f"{config.model.decoder} decoder; choose from {', '.join(allowed)}"
        )
    if config.model.weight_drop and config.model.decoder != "lstm":
        raise SeqVAEError(
            f"config key 'model.weight_drop': DropConnect acts on an LSTM's recurrent weights; the "
            f"{config.model.decoder} decoder has none (use model.dropout)"
        )
    uses_transformer = "transformer" in (config.model.encoder, config.model.decoder)
    if uses_transformer and config.model.hidden_dim % config.model.num_heads:
        raise SeqVAEError(
            f"config key 'model.num_heads': hidden_dim {config.model.hidden_dim} is not divisible by "
            f"{config.model.num_heads} heads"
        )


def _check_methods(config: Config) -> None:
    """Combinations of methods that have no meaning, refused with the reason."""
    if config.model.latent_dim == 0:  # a language model: nothing about z applies
        refused = [
            ("model.posterior", config.model.posterior != "gaussian"),
            ("model.flow", config.model.flow != "none"),
            # the default free bits have nothing to act on in a language model and are left inert
            ("objective.free_bits", config.objective.free_bits not in ("none", ObjectiveConfig.free_bits)),
            ("train.aggressive", config.train.aggressive),
        ]
        for key, wrong in refused:
            if wrong:
                raise SeqVAEError(f"config key '{key}': a language model (model.latent_dim = 0) has no z or KL for it to act on")
        if config.train.init_from and set(config.train.init_parts) != {"decoder"}:
            raise SeqVAEError("config key 'train.init_parts': a language model (model.latent_dim = 0) has only a decoder to warm-start")
    if config.model.flow != "none" and config.model.flow_steps and config.objective.free_bits in PER_DIMENSION_FREE_BITS:
        raise SeqVAEError(
            f"config key 'objective.free_bits': {config.objective.free_bits} has no meaning with a flow posterior (its KL is a "
            "Monte-Carlo estimate of the whole code, not a sum over dimensions); use total_hinge with "
            "free_bits_lambda = the total target, or mdr"
        )
    if config.model.flow == "planar" and config.model.flow_steps and config.train.aggressive:
        raise SeqVAEError(
            "config key 'train.aggressive': it switches off on the validation MI, which a planar flow posterior "
            "cannot give (no tractable inverse); use model.flow=iaf"
        )
    if config.train.lr_decay == "wsd":
        if not config.train.max_steps:
            raise SeqVAEError("config key 'train.lr_decay': wsd decays towards train.max_steps; set it (> 0)")
        if config.train.lr_warmup_steps + config.train.lr_decay_steps > config.train.max_steps:
            raise SeqVAEError(
                f"config key 'train.lr_decay_steps': lr_warmup_steps {config.train.lr_warmup_steps} + lr_decay_steps "
                f"{config.train.lr_decay_steps} exceed train.max_steps {config.train.max_steps}"
            )
    if config.train.init_parts and len(set(config.train.init_parts)) != len(config.train.init_parts):
        raise SeqVAEError(f"config key 'train.init_parts': {list(config.train.init_parts)} names a part twice")
    if {"posterior", "posterior.projection"} <= set(config.train.init_parts):
        raise SeqVAEError("config key 'train.init_parts': posterior.projection is part of posterior; name one of them")
    if config.train.init_from and not config.train.init_parts:
        raise SeqVAEError("config key 'train.init_parts': name at least one part to copy from train.init_from")


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> Config:
    """Build a checked :class:`Config` from nested dicts (``{"model": {"latent_dim": 32}}``)."""
    sections: dict[str, Any] = {}
    for section_name, values in raw.items():
        if section_name not in SECTIONS:
            raise SeqVAEError(
                f"{source}: unknown section '{section_name}'; valid sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise SeqVAEError(f"{source}: '{section_name}' must be a table of keys")
        section_cls = SECTIONS[section_name]
        types = _section_types(section_cls)
        checked = {}
        for key, value in values.items():
            dotted = f"{section_name}.{key}"
            if key not in types:
                raise SeqVAEError(
                    f"{source}: unknown key '{dotted}'; valid keys in [{section_name}]: {', '.join(types)}"
                )
            checked[key] = _coerce(dotted, value, types[key])
            _check_choices(dotted, checked[key])
        sections[section_name] = section_cls(**checked)
    config = Config(**sections)
    _check_ranges(config)
    return config


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Nested plain-type dicts (tuples become lists), the inverse of :func:`config_from_dict`."""
    result: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(config):
        values = dataclasses.asdict(getattr(config, section.name))
        result[section.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return result


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to nested dicts, parsing each value by its field type."""
    raw = {name: dict(values) for name, values in raw.items()}
    for override in overrides:
        if "=" not in override:
            raise SeqVAEError(f"override '{override}': expected section.key=value")
        dotted, text = override.split("=", 1)
        dotted = dotted.strip()
        if dotted.count(".") != 1:
            raise SeqVAEError(f"override '{override}': expected section.key=value, e.g. model.latent_dim=32")
        section_name, key = dotted.split(".")
        if section_name not in SECTIONS:
            raise SeqVAEError(
                f"override '{override}': unknown section '{section_name}'; valid sections: {', '.join(SECTIONS)}"
            )
        types = _section_types(SECTIONS[section_name])
        if key not in types:
            raise SeqVAEError(
                f"override '{override}': unknown key '{dotted}'; valid keys in [{section_name}]: {', '.join(types)}"
            )
        raw.setdefault(section_name, {})[key] = _parse_override_value(dotted, text, types[key])
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or start from defaults when ``path`` is None), then apply overrides.

    Relative paths (``run.dir``, the data files and ``train.init_from``) are taken from the
    current directory, like every path on the command line; the returned config holds absolute
    data paths so that a saved run can be evaluated from anywhere.
    """
    return load_layered_config([] if path is None else [path], overrides)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SeqVAEError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SeqVAEError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise SeqVAEError(f"{path}: invalid TOML: {error}") from None


def load_layered_config(paths: list[str | Path], overrides: list[str] | None = None) -> Config:
    """Several TOML files read in order, each key of a later file replacing the same key of an
    earlier one (a recipe's base config, then a method's few keys), then the overrides."""
    raw: dict[str, Any] = {}
    source = "config"
    for path in map(Path, paths):
        layer = _read_toml(path)
        source = str(path)
        for section_name, values in layer.items():
            if isinstance(values, dict) and isinstance(raw.get(section_name), dict):
                raw[section_name] = {**raw[section_name], **values}
            else:
                raw[section_name] = values
    raw = apply_overrides(raw, overrides or [])
    raw = _resolve_paths(raw, Path.cwd())
    return config_from_dict(raw, source=source)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    raw = dict(raw)
    for dotted in PATH_KEYS:
        section_name, key = dotted.split(".")
        section = raw.get(section_name)
        if not isinstance(section, dict):
            continue
        value = section.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            raw[section_name] = {**section, key: str((base / value).resolve())}
    return raw


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(config: Config) -> str:
    """The resolved config as a TOML document that :func:`load_config` reads back unchanged."""
    lines: list[str] = []
    for section_name, values in config_to_dict(config).items():
        lines.append(f"[{section_name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
