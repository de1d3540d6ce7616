"""The latent-space and likelihood measures of a sentence VAE, as short functions of tensors.

Each follows the field's definition (../shared/METRICS.md) with its citation; seqvae.evaluation
runs them over a data set. Shapes: N sentences, B a batch of them, K samples, Z latent.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from seqvae.data.batching import Batch
from seqvae.data.tokenizers import EOS_ID, UNK_ID
from seqvae.generation import cut_at_eos, longest
from seqvae.models.posterior import DiagonalGaussian, FlowPosterior

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


SCORES_PER_CALL = 4_000_000
"""How many output-layer scores (positions x the scores each position needs: V with the full
softmax, the head's size with the adaptive one) one IW decoder call may hold: 16 MB of float32,
small enough that the C allocator reuses the freed blocks instead of mapping and faulting in fresh
memory for every chunk (it does so for blocks under 32 MB), large enough that the decoder runs on
batches of hundreds of sentence-samples."""


@torch.no_grad()
def importance_weighted_log_likelihood(
    model,
    batch: Batch,
    *,
    num_samples: int = 500,
    chunk_size: int | None = None,
    scores_per_call: int = SCORES_PER_CALL,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) ~ logsumexp_k [log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)] - log K, z_k ~ q(z|x)
    (Burda et al. 2016), per sentence, (B,).

    The encoder runs once per sentence and all K x B codes are drawn at once, so the estimate does
    not depend on how the samples are chunked. The decoder scores the samples a chunk at a time,
    as one batch of chunk x B sentence-samples through the target-only path of the output layer;
    a chunk holds at most ``chunk_size`` samples (default: as many as fit) and at most
    ``scores_per_call`` output-layer scores, so memory is bounded whatever K, B, the sentence
    length and the vocabulary. The repeated inputs, targets and mask are built once."""
    return importance_weighted_log_likelihoods(
        model, batch, (standard_normal_log_prob,), num_samples=num_samples, chunk_size=chunk_size,
        scores_per_call=scores_per_call, generator=generator,
    )[0]


@torch.no_grad()
def importance_weighted_log_likelihoods(
    model,
    batch: Batch,
    priors,
    *,
    num_samples: int = 500,
    chunk_size: int | None = None,
    scores_per_call: int = SCORES_PER_CALL,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The importance-weighted bound of :func:`importance_weighted_log_likelihood` under each of
    several priors p_j(z) of the same decoder, (J, B): logsumexp_k [log p(x|z_k) + log p_j(z_k) -
    log q(z_k|x)] - log K. Every prior's bound uses the same draws z_k ~ q(z|x) and the same decoder
    scores log p(x|z_k), so a second prior (a density fitted after training, seqvae.fitted_prior)
    costs only its log-density; each is a valid bound for the model with that prior. ``priors``:
    functions from codes (..., Z) to log-densities (...)."""
    posterior = model.encode(batch)
    rows = batch.inputs.shape[0]
    per_sample = batch.inputs.numel() * model.decoder.output.scores_per_position
    chunk = max(1, min(num_samples, scores_per_call // per_sample, chunk_size or num_samples))
    z, log_q = posterior.sample_with_log_prob(num_samples, generator)  # (K, B, Z), (K, B): with a flow,
    log_likelihood = torch.zeros_like(log_q)  # each sample's own log q, no inverse needed
    inputs, targets, mask = (part.repeat(chunk, 1) for part in (batch.inputs, batch.targets, batch.mask))
    for start in range(0, num_samples, chunk):
        count = min(chunk, num_samples - start)
        used = count * rows  # the first rows of the repeats hold ``count`` copies of the batch
        flat = z[start : start + count].reshape(used, -1)  # (count * B, Z)
        nll = model.decoder.sequence_nll(inputs[:used], flat, targets[:used], mask[:used])
        log_likelihood[start : start + count] = -nll.view(count, rows)
    bounds = [torch.logsumexp(prior(z).to(log_q.dtype) - log_q + log_likelihood, dim=0) - math.log(num_samples) for prior in priors]
    return torch.stack(bounds)


@torch.no_grad()
def mutual_information(
    posterior: DiagonalGaussian | FlowPosterior,
    *,
    group_size: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """I(x; z) = E_x E_q(z|x)[log q(z|x)] - E_x E_q(z|x)[log q(z)] (Hoffman & Johnson 2016), with
    the aggregate posterior q(z) the mixture (1/N) sum_j q(z|x_j) over all N sentences given, or,
    with ``group_size``, over consecutive groups of that many (He et al. 2019's mini-batch
    variant). One z per sentence. The first term is the analytic negative entropy of the
    Gaussian; with a flow, the base's analytic negative entropy minus the log-determinant at the
    sampled z_0. log q(z_i | x_j) of a flow comes from its exact inverse (IAF); a flow without one
    (planar) raises ValueError."""
    if not posterior.has_density:
        raise ValueError("the posterior has no tractable density at other sentences' codes")
    sentences = posterior.base.mean.shape[0]
    size = sentences if group_size is None else group_size
    total = 0.0
    for start in range(0, sentences, size):
        group = posterior.select(slice(start, start + size))
        z, expected_log_q = group.sample_for_information(generator)  # (n, Z), (n,)
        count = z.shape[0]
        log_aggregate = torch.cat(
            [torch.logsumexp(group.cross_log_prob(z[i : i + 256]), dim=1) for i in range(0, count, 256)]  # (chunk,)
        ) - math.log(count)
        total += float(expected_log_q.sum() - log_aggregate.sum())
    return total / sentences


def active_units(means: torch.Tensor, *, threshold: float = 0.01) -> int:
    """Dimensions i with Var_x(E_q(z|x)[z_i]) >= threshold (Burda et al. 2016), unbiased variance
    of the posterior means (N, Z) over the set."""
    return int((means.var(dim=0, unbiased=True) >= threshold).sum())


def linear_probe_accuracy(
    features: torch.Tensor, labels: list, *, folds: int = 5, seed: int = 0, l2: float = 1e-3
) -> tuple[float, float]:
    """Held-out accuracy of a linear probe (Alain & Bengio 2017) predicting ``labels`` from
    ``features`` (N, D), by ``folds``-fold cross-validation, and the majority-class rate it is
    compared with (each held-out fold predicted as the most frequent label of the other folds).

    The probe is multinomial logistic regression on features standardised with the training
    folds' mean and standard deviation, with an L2 penalty ``l2`` * ||W||^2, fitted to
    convergence with L-BFGS in float64: deterministic for a given seed."""
    values = sorted(set(labels), key=str)
    if len(labels) != features.shape[0]:
        raise ValueError(f"{len(labels)} labels for {features.shape[0]} feature rows")
    if len(labels) < folds:
        raise ValueError(f"a {folds}-fold probe needs at least {folds} sentences, got {len(labels)}")
    index = {value: i for i, value in enumerate(values)}
    y = torch.tensor([index[label] for label in labels])
    x = features.detach().to(torch.float64).cpu()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    correct = majority_correct = 0
    for fold in range(folds):
        held_out = order[fold::folds]
        kept = torch.ones(len(y), dtype=torch.bool)
        kept[held_out] = False
        train_x, train_y = x[kept], y[kept]
        centre, scale = train_x.mean(0), train_x.std(0).clamp_min(1e-8)
        predictions = _fit_logistic_regression((train_x - centre) / scale, train_y, len(values), l2)(
            (x[held_out] - centre) / scale
        )
        correct += int((predictions == y[held_out]).sum())
        majority_correct += int((y[held_out] == torch.bincount(train_y, minlength=len(values)).argmax()).sum())
    return correct / len(y), majority_correct / len(y)


def _fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float):
    weight = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return lambda inputs: (inputs @ weight.detach() + bias.detach()).argmax(-1)


@torch.no_grad()
def teacher_forced_and_free_running_nll(decoder, batch: Batch, z: torch.Tensor, *, decode_length: int = 0):
    """-log p of the reference tokens per sentence, (B,) each: teacher-forced, the decoder reads
    the reference prefix; free-running, it reads its own greedy predictions (the notes, 3.2).
    The free-running pass is incremental: one cached step per position.

    With ``decode_length``, the same greedy pass goes on up to that many tokens (or until every
    sentence has ended) and its token ids, cut at <eos>, are returned third: exactly what
    ``greedy_decode(decoder, z, max_length=decode_length)`` gives, without decoding twice."""
    teacher_forced = decoder.sequence_nll(batch.inputs, z, batch.targets, batch.mask)
    width = batch.targets.shape[1]
    token = batch.inputs[:, :1]
    finished = torch.zeros(batch.inputs.shape[0], dtype=torch.bool, device=z.device)
    state = None
    steps, tokens = [], []
    for position in range(longest(decoder, max(width, decode_length))):
        log_probs, state = decoder.log_probs(token, z, state)  # (B, 1, V)
        log_probs = log_probs[:, -1]
        token = log_probs.argmax(dim=-1, keepdim=True)
        if position < width:  # log p of the reference token after the decoder's own prefix
            steps.append(log_probs.gather(1, batch.targets[:, position : position + 1]))
        tokens.append(token.squeeze(1))
        finished |= token.squeeze(1) == EOS_ID
        if position + 1 >= width and bool(finished.all()):
            break
    free_running = -(torch.cat(steps, dim=1) * batch.mask).sum(dim=1)
    if not decode_length:
        return teacher_forced, free_running
    ids = torch.stack(tokens, dim=1)[:, :decode_length].tolist()
    return teacher_forced, free_running, cut_at_eos(ids)


@torch.no_grad()
def inputless_nll(decoder, batch: Batch, z: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per sentence when every decoder input but <bos> is <unk>: what z alone explains."""
    after_begin = torch.arange(batch.inputs.shape[1], device=batch.inputs.device) > 0
    inputs = batch.inputs.masked_fill(batch.mask & after_begin, UNK_ID)
    return decoder.sequence_nll(inputs, z, batch.targets, batch.mask)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (Papineni et al. 2002; Post 2018) of hypotheses against one reference
    each, on the text's own whitespace tokens (seqvae compares tokenized sentences)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none", force=True).score)


def distinct_n(sentences: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the sentences' whitespace tokens."""
    grams = [tuple(words[i : i + n]) for words in (s.split() for s in sentences) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(sentences: list[str]) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): the mean sentence BLEU of each sentence against all
    the others as references; 100 when every sentence is the same, low when they differ.

    Each term is sacrebleu's ``sentence_bleu(sentence, others, tokenize="none")`` (Post 2018:
    exponential smoothing, effective order, the closest reference length, each n-gram's count
    clipped at its largest count in any one reference), from statistics gathered once: every
    sentence's n-grams are counted once, and an n-gram's largest count among the others is its
    largest count overall, or the second largest where this sentence holds the largest. sacrebleu
    itself counts the others' n-grams again for every sentence, N^2 work that took 1.4 s of a
    tiny run's 1.5 s validation."""
    from sacrebleu.metrics.bleu import BLEU, MAX_NGRAM_ORDER

    if len(sentences) < 2:
        raise ValueError("self-BLEU needs at least two sentences")
    order = MAX_NGRAM_ORDER
    counts, lengths = [], []
    for sentence in sentences:
        words = sentence.split()
        counts.append(Counter(tuple(words[i : i + n]) for n in range(1, order + 1) for i in range(len(words) - n + 1)))
        lengths.append(len(words))
    largest: dict[tuple, tuple[int, int, int]] = {}  # n-gram: (largest count, its sentence, second largest)
    for index, sentence_counts in enumerate(counts):
        for gram, count in sentence_counts.items():
            first, holder, second = largest.get(gram, (0, -1, 0))
            if count > first:
                largest[gram] = (count, index, first)
            elif count > second:
                largest[gram] = (first, holder, count)
    by_length = Counter(lengths)
    scores = []
    for index, sentence_counts in enumerate(counts):
        correct, total = [0] * order, [0] * order
        for gram, count in sentence_counts.items():
            first, holder, second = largest[gram]
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, second if holder == index else first)
        others = [length for length, number in by_length.items() if length != lengths[index] or number > 1]
        # the closest reference length, the shorter of two as close (sacrebleu's rule)
        reference_length = min(others, key=lambda length: (abs(length - lengths[index]), length))
        score = BLEU.compute_bleu(correct, total, lengths[index], reference_length, smooth_method="exp", effective_order=True)
        scores.append(score.score)
    return sum(scores) / len(scores)


@torch.no_grad()
def self_log_likelihood_per_token(
    decoder, z: torch.Tensor, ids: list[list[int]], *, ended: list[bool] | None = None
) -> torch.Tensor:
    """log p(x|z) / tokens of each decoded sentence x under the z it was decoded from (the notes,
    section 3.3: does a prior sample decode to something the model finds plausible?), (N,).

    A sentence that ended (``ended``, default all) is scored with its <eos>, tokens = words + 1; a
    decode cut at the length limit before any <eos> is scored on its words alone, tokens = words,
    not as if it had ended."""
    from seqvae.data.batching import collate

    batch = collate(ids).to(z.device)
    mask, lengths = batch.mask, batch.lengths
    if ended is not None and not all(ended):
        open_rows = ~torch.tensor(ended, device=z.device)
        eos_slot = torch.zeros_like(mask)
        eos_slot[torch.arange(len(ids), device=z.device), lengths - 1] = True
        mask = mask & ~(eos_slot & open_rows.unsqueeze(1))
        lengths = lengths - open_rows.long()
        width = int(mask.any(dim=0).nonzero().max()) + 1  # no column past the last scored target
        inputs, targets, mask = batch.inputs[:, :width], batch.targets[:, :width], mask[:, :width]
    else:
        inputs, targets = batch.inputs, batch.targets
    return -decoder.sequence_nll(inputs, z, targets, mask) / lengths


def diagnose(
    *,
    kl: float,
    active: int,
    mean_posterior_std: float,
    free_bits_target: float = 0.0,
    collapse_kl: float = 0.1,
    overload_std: float = 0.01,
    overload_factor: float = 10.0,
) -> list[str]:
    """Warnings for the two failure modes of the notes (section 3), each with its figures:
    posterior collapse (KL under ``collapse_kl`` nats and no active unit) and information
    overload (mean posterior standard deviation under ``overload_std``, or KL over
    ``overload_factor`` times a free-bits target). Empty for a healthy posterior."""
    warnings = []
    if kl < collapse_kl and active == 0:
        warnings.append(f"posterior collapse: KL {kl:.4f} nats < {collapse_kl} and no active unit")
    if mean_posterior_std < overload_std:
        warnings.append(
            f"information overload: mean posterior std {mean_posterior_std:.4g} < {overload_std} (codes near-deterministic)"
        )
    if free_bits_target > 0 and kl > overload_factor * free_bits_target:
        warnings.append(
            f"information overload: KL {kl:.2f} nats > {overload_factor:g} x the free-bits target {free_bits_target:g}"
        )
    return warnings


def homotopy_endpoint_bleu(decoded_paths: list[list[str]], pairs: list[tuple[str, str]]) -> float:
    """Endpoint fidelity of homotopies (Bowman et al. 2016; the notes, section 3.3: a path between
    two sentences should join them): corpus BLEU of the decodes at t = 0 and t = 1 of every path
    against the two sentences it was drawn between, 2P hypotheses with one reference each."""
    hypotheses = [path[0] for path in decoded_paths] + [path[-1] for path in decoded_paths]
    references = [first for first, _ in pairs] + [second for _, second in pairs]
    return corpus_bleu(hypotheses, references)


def homotopy_falling_share(decoded_paths: list[list[str]], pairs: list[tuple[str, str]]) -> float:
    """Smoothness of homotopies: along a path from x0 to x1 the decodes should come ever closer to
    x1. The share of the P x (steps - 1) steps t_i -> t_i+1 at which the sentence BLEU of the decode
    to x1 (sacrebleu's, exponential smoothing) falls; 0 for paths that only rise or stay."""
    import sacrebleu

    falls = steps = 0
    for path, (_, second) in zip(decoded_paths, pairs):
        scores = [sacrebleu.sentence_bleu(sentence, [second], tokenize="none").score for sentence in path]
        falls += sum(after < before for before, after in zip(scores, scores[1:]))
        steps += len(scores) - 1
    return falls / steps if steps else 0.0
