"""Densities over the latent space to draw codes from: the standard normal N(0, I) that the model
was trained with, and a Gaussian mixture fitted after training to the codes the encoder produces.

Why a fitted one: a VAE at a high rate (or an autoencoder, beta = 0) leaves "holes" in N(0, I):
the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) covers only part of it, and codes drawn where
no training sentence lives decode to text unlike the corpus. Fitting a density to the training
set's codes after training and sampling from it instead is the ex-post density estimation of
Ghosh et al. 2020 ("From Variational to Deterministic Autoencoders", a GMM with 10 components on
the posterior means) and, with a second VAE in place of the mixture, the two-stage VAE of Dai &
Wipf 2019. The mixture here has diagonal or full covariances; the number of components and the
covariance are chosen by the mean log-likelihood of the validation set's codes (each candidate
fitted on the training codes by EM, Dempster et al. 1977).

A fitted density r(z) is also a prior of the same decoder: p_r(x) = E_r(z)[p(x|z)], and
importance sampling with q(z|x) as the proposal bounds its log-likelihood as it does the standard
prior's (seqvae.measures.importance_weighted_log_likelihoods). The density is fitted on training
data and chosen on validation data, so the bound on test sentences is a fair figure for that model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from seqvae.errors import SeqVAEError
from seqvae.files import atomic_write_with

PRIOR_FILE = "prior.json"
"""The fitted prior of a run, beside its checkpoints."""
COVARIANCES = ("diagonal", "full")
CODES = ("mean", "sample")
"""What is fitted: each sentence's posterior mean, or one draw z ~ q(z|x) per sentence."""
LOG_2PI = math.log(2 * math.pi)
KMEANS_ITERATIONS = 20
ROWS_PER_CHUNK = 4096
"""Codes whose products z z^T are formed at once when scoring (memory: rows x dimensions^2)."""


def check_temperature(temperature: float, name: str = "temperature") -> None:
    """A sampling temperature must be a positive finite number (``name``: what the error calls it)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise SeqVAEError(f"{name} {temperature}: must be a positive number (1 draws from the prior as it is)")


class StandardNormal:
    """N(0, I) in ``dim`` dimensions: the prior the model was trained with."""

    name = "standard"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I), summed over the last dimension."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(num_samples, self.dim, generator=generator)

    def tempered(self, temperature: float) -> "StandardNormal | GaussianMixture":
        """N(0, temperature^2 I): itself at temperature 1, else a one-component mixture."""
        if temperature == 1:
            return self
        check_temperature(temperature)
        return GaussianMixture(
            weights=torch.ones(1, dtype=torch.float64), means=torch.zeros(1, self.dim, dtype=torch.float64),
            scale=torch.full((1, self.dim), float(temperature), dtype=torch.float64), covariance="diagonal",
            name=self.name, fit={"temperature": temperature},
        )


@dataclass
class GaussianMixture:
    """sum_k w_k N(z; mu_k, Sigma_k), with Sigma_k = L_k L_k^T (``full``) or diag(s_k^2)
    (``diagonal``: ``scale`` holds s_k). Kept in float64; log_prob and sample return the dtype
    they are given (sample: float32)."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, Z)
    scale: torch.Tensor  # (K, Z) standard deviations, or (K, Z, Z) lower Cholesky factors
    covariance: str
    name: str = "fitted"
    fit: dict[str, Any] = field(default_factory=dict)
    """How it was fitted: the codes, the checkpoint, every candidate's log-likelihoods."""

    @property
    def components(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_log_prob(self, z: torch.Tensor, products: torch.Tensor | None = None) -> torch.Tensor:
        """log w_k + log N(z; mu_k, Sigma_k) for each component, (..., K), float64. ``products``:
        the rows' z z^T flattened, (N, Z * Z), where the caller keeps them (:func:`outer_products`)."""
        flat = z.detach().double().reshape(-1, self.dim)
        if self.covariance == "diagonal":
            log_det = 2 * self.scale.log().sum(-1)
        else:
            log_det = 2 * torch.diagonal(self.scale, dim1=-2, dim2=-1).log().sum(-1)
        squared = self.squared_distances(flat, products)
        joint = self.weights.log() - 0.5 * (squared + log_det + self.dim * LOG_2PI)
        return joint.reshape(*z.shape[:-1], self.components)

    def squared_distances(self, x: torch.Tensor, products: torch.Tensor | None = None) -> torch.Tensor:
        """(x - mu_k)^T Sigma_k^-1 (x - mu_k) for rows x (N, Z), (N, K), expanded as
        x^T P x - 2 x^T P mu + mu^T P mu (P = Sigma^-1) so that each term is one matrix product
        over all components: an EM step then reads the codes a few times instead of building
        (K, N, Z) differences. In float64 the expansion loses nothing that matters: its terms are
        of the codes' squared size over the variances, its rounding some 1e-15 of that."""
        if self.covariance == "diagonal":
            precision = self.scale.pow(-2)  # (K, Z)
            squared = x.pow(2) @ precision.T - 2 * x @ (self.means * precision).T + (self.means.pow(2) * precision).sum(1)
            return squared.clamp_min(0)
        identity = torch.eye(self.dim, dtype=torch.float64).expand_as(self.scale)
        inverse = torch.linalg.solve_triangular(self.scale, identity, upper=False)  # (K, Z, Z): L^-1
        precision = inverse.transpose(-1, -2) @ inverse  # Sigma^-1 = L^-T L^-1
        pulled = (precision @ self.means.unsqueeze(-1)).squeeze(-1)  # (K, Z): P mu
        flat_precision = precision.reshape(self.components, -1).T  # (Z * Z, K)
        blocks = [
            (outer_products(x[start : start + ROWS_PER_CHUNK]) if products is None else products[start : start + ROWS_PER_CHUNK])
            @ flat_precision
            for start in range(0, x.shape[0], ROWS_PER_CHUNK)
        ]
        quadratic = torch.cat(blocks) if blocks else x.new_zeros(0, self.components)
        return (quadratic - 2 * x @ pulled.T + (self.means * pulled).sum(1)).clamp_min(0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log r(z), (...,) for z (..., Z)."""
        return torch.logsumexp(self.component_log_prob(z), dim=-1).to(z.dtype)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a component by its weight, then z from it: (N, Z), float32."""
        chosen = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.dim, generator=generator, dtype=torch.float64)
        if self.covariance == "diagonal":
            z = self.means[chosen] + self.scale[chosen] * noise
        else:
            z = self.means[chosen] + (self.scale[chosen] @ noise.unsqueeze(-1)).squeeze(-1)
        return z.float()

    def tempered(self, temperature: float) -> "GaussianMixture":
        """The mixture with every component's covariance times ``temperature``^2 (its weights and
        means kept): the temperature of sampling from a density model (Kingma & Dhariwal 2018, Glow,
        section 5). Below 1 the codes lie nearer the components' means, where the decoder has seen
        most codes: samples more fluent and less varied. Still a normalised density, so the IW
        bound under it is a valid bound of the decoder with it as its prior."""
        if temperature == 1:
            return self
        check_temperature(temperature)
        return replace(self, scale=self.scale * temperature, fit={**self.fit, "temperature": temperature})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "gaussian_mixture",
            "covariance": self.covariance,
            "components": self.components,
            "dim": self.dim,
            "fit": self.fit,
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GaussianMixture:
        tensors = {key: torch.tensor(raw[key], dtype=torch.float64) for key in ("weights", "means", "scale")}
        return cls(**tensors, covariance=raw["covariance"], fit=raw.get("fit", {}))


def outer_products(x: torch.Tensor) -> torch.Tensor:
    """Each row's x x^T, flattened: (N, Z) -> (N, Z * Z)."""
    return (x.unsqueeze(2) * x.unsqueeze(1)).reshape(x.shape[0], -1)


def _kmeans_plus_plus(codes: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre so far."""
    centres = [codes[torch.randint(len(codes), (1,), generator=generator)]]
    nearest = (codes - centres[0]).pow(2).sum(-1)
    for _ in range(1, k):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        centres.append(codes[torch.multinomial(weights, 1, generator=generator)])
        nearest = torch.minimum(nearest, (codes - centres[-1]).pow(2).sum(-1))
    return torch.cat(centres)


def fit_gaussian_mixture(
    codes: torch.Tensor,
    components: int,
    covariance: str = "full",
    *,
    seed: int = 0,
    max_iterations: int = 100,
    tolerance: float = 1e-4,
    regularization: float = 1e-6,
    restarts: int = 2,
) -> GaussianMixture:
    """A Gaussian mixture fitted to codes (N, Z) by EM (Dempster et al. 1977), from k-means++
    centres refined by Lloyd's k-means and the covariances of those hard clusters; stops when the
    mean log-likelihood gains less than ``tolerance`` nats. ``regularization`` times the codes' mean
    variance is added to every variance, so that no component collapses onto a point."""
    if covariance not in COVARIANCES:
        raise SeqVAEError(f"covariance '{covariance}': choose {' or '.join(COVARIANCES)}")
    x = codes.detach().double().cpu()
    count, dim = x.shape
    if components < 1 or count < components:
        raise SeqVAEError(f"{components} components need at least as many codes; there are {count}")
    floor = regularization * float(x.var(0, unbiased=False).mean().clamp_min(1e-12))
    generator = torch.Generator().manual_seed(seed)
    fits = [_expectation_maximization(x, components, covariance, generator, floor, max_iterations, tolerance) for _ in range(restarts)]
    return max(fits, key=lambda fit: fit[1])[0]


def _expectation_maximization(x, components, covariance, generator, floor, max_iterations, tolerance):
    """One EM run from a k-means++ seeding: (the mixture, its mean training log-likelihood)."""
    centres = _kmeans_plus_plus(x, components, generator)
    for _ in range(KMEANS_ITERATIONS):  # Lloyd's iterations; an emptied cluster keeps its centre
        nearest = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(nearest, minlength=components).double()
        sums = torch.zeros_like(centres).index_add_(0, nearest, x)
        centres = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), centres)
    responsibility = torch.nn.functional.one_hot(torch.cdist(x, centres).argmin(1), components).double()
    products = outer_products(x) if covariance == "full" else None  # read by every E and M step
    mixture = _maximization(x, responsibility, covariance, floor, products)  # started from the hard clusters
    previous = -math.inf
    for _ in range(max_iterations):
        joint = mixture.component_log_prob(x, products)  # E step: (N, K)
        total = torch.logsumexp(joint, dim=1)
        log_likelihood = float(total.mean())
        if log_likelihood - previous < tolerance:
            break
        previous = log_likelihood
        mixture = _maximization(x, (joint - total.unsqueeze(1)).exp(), covariance, floor, products)
    return mixture, float(torch.logsumexp(mixture.component_log_prob(x, products), dim=1).mean())


def _maximization(x: torch.Tensor, responsibility: torch.Tensor, covariance: str, floor: float, products=None) -> GaussianMixture:
    """The M step: the weights, means and covariances that maximise the expected log-likelihood
    under the responsibilities (N, K); ``floor`` added to every variance. Full covariances come
    from the second moments, sum_n r_nk x_n x_n^T / w_k - mu_k mu_k^T (``products``: the rows'
    x x^T, :func:`outer_products`)."""
    weight = responsibility.sum(0) + 1e-10
    means = responsibility.T @ x / weight.unsqueeze(1)
    if covariance == "diagonal":
        variance = responsibility.T @ x.pow(2) / weight.unsqueeze(1) - means.pow(2)
        scale = (variance.clamp_min(0) + floor).sqrt()
    else:
        dim = x.shape[1]
        second = responsibility.T @ (outer_products(x) if products is None else products) / weight.unsqueeze(1)
        matrices = second.view(-1, dim, dim) - means.unsqueeze(2) * means.unsqueeze(1)
        matrices = (matrices + matrices.transpose(1, 2)) / 2
        scale = torch.linalg.cholesky(matrices + floor * torch.eye(x.shape[1], dtype=torch.float64))
    return GaussianMixture(weight / weight.sum(), means, scale, covariance)


def choose_mixture(
    train_codes: torch.Tensor,
    valid_codes: torch.Tensor,
    *,
    components: tuple[int, ...] = (1, 4, 16),
    covariances: tuple[str, ...] = COVARIANCES,
    seed: int = 0,
    max_codes: int = 20000,
    progress=None,
) -> GaussianMixture:
    """Fit every (components, covariance) candidate on the training codes and keep the one whose
    mean log-likelihood of the validation codes is highest. A candidate with more free
    parameters than a tenth of the training codes' numbers is left out (it would fit noise).
    At most ``max_codes`` training codes are used (a random subset, drawn from ``seed``).
    ``fit["candidates"]`` of the result lists each candidate's train and valid log-likelihood."""
    if train_codes.shape[0] > max_codes:
        kept = torch.randperm(train_codes.shape[0], generator=torch.Generator().manual_seed(seed))[:max_codes]
        train_codes = train_codes[kept.sort().values]
    count, dim = train_codes.shape
    candidates, best, best_score = [], None, -math.inf
    for covariance in covariances:
        per_component = dim + (dim if covariance == "diagonal" else dim * (dim + 1) // 2) + 1
        for k in components:
            if k > 1 and k * per_component > count * dim / 10:
                continue
            mixture = fit_gaussian_mixture(train_codes, k, covariance, seed=seed)
            train_ll = float(mixture.log_prob(train_codes.double()).mean())
            valid_ll = float(mixture.log_prob(valid_codes.double()).mean())
            candidates.append({"components": k, "covariance": covariance, "train_log_likelihood": round(train_ll, 4),
                               "valid_log_likelihood": round(valid_ll, 4)})
            if progress is not None:
                progress(candidates[-1])
            if valid_ll > best_score:
                best, best_score = mixture, valid_ll
    standard = StandardNormal(dim)
    best.fit = {
        "valid_log_likelihood": round(best_score, 4),
        "candidates": candidates,
        "standard_normal_valid_log_likelihood": round(float(standard.log_prob(valid_codes.double()).mean()), 4),
        "train_codes": count,
        "valid_codes": valid_codes.shape[0],
    }
    return best


def save_prior(mixture: GaussianMixture, run_dir: str | Path) -> Path:
    path = Path(run_dir) / PRIOR_FILE
    text = json.dumps(mixture.to_dict(), indent=1) + "\n"
    atomic_write_with(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def load_prior(run_dir: str | Path) -> GaussianMixture:
    """The fitted prior of a run; a one-line error when there is none or it is unreadable."""
    path = Path(run_dir) / PRIOR_FILE
    if not path.is_file():
        raise SeqVAEError(f"{path}: no fitted prior; fit one with: seqvae prior {run_dir}")
    try:
        return GaussianMixture.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise SeqVAEError(f"{path}: not a fitted prior ({error}); fit it again with: seqvae prior {run_dir}") from None


def fit_to_run(run, *, components=None, covariance=None, codes=None, seed: int = 0, save: bool = True, progress: bool = False) -> GaussianMixture:
    """:meth:`seqvae.runs.Run.fit_prior`: the mixture chosen for a run's training and validation
    codes (its config's ``[prior]`` unless given), saved as ``RUN/prior.json`` unless ``save`` is false."""
    from seqvae.data.corpus import load_corpus
    from seqvae.runs import CODE_CHUNK

    run._needs_z("fit a prior to")
    settings = run.config.prior
    codes = codes or settings.codes
    if codes not in ("mean", "sample"):
        raise SeqVAEError(f"codes '{codes}': choose mean or sample")
    corpus = load_corpus(run.config.data)

    def codes_of(sentences: list[str], offset: int) -> torch.Tensor:
        if codes == "mean":
            return run.posterior_means(sentences, progress=progress).cpu()
        generator = torch.Generator(device=run.device).manual_seed(seed * 2 + offset)
        return torch.cat([
            run.encode(sentences[start : start + CODE_CHUNK]).rsample(generator).cpu()
            for start in range(0, len(sentences), CODE_CHUNK)
        ])

    with torch.no_grad():
        train_codes, valid_codes = codes_of(corpus.splits["train"], 0), codes_of(corpus.splits["valid"], 1)
    mixture = choose_mixture(
        train_codes, valid_codes, components=components or settings.components,
        covariances=covariance or settings.covariance, seed=seed,
    )
    mixture.fit.update(codes=codes, seed=seed)
    if run.checkpoint is not None:
        mixture.fit["checkpoint"] = {"file": run.checkpoint.path.name, "step": run.checkpoint.step}
    if save:
        save_prior(mixture, run.run_dir)
    return mixture
