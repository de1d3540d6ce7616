"""The latent map of a run's report (``RUN/report/latent.png``): where the validation codes lie,
what they separate, where the priors put their mass, and how the KL spreads over the dimensions."""

from __future__ import annotations

from pathlib import Path

import torch

from seqvae.report import save_png


LATENT_MAP_SENTENCES = 2000
"""Validation sentences drawn in the latent map (the first ones: enough to see structure, few
enough to encode in seconds)."""


def plot_latent_map(run, sentences: list[str], path: str | Path, *, labels: list[dict] | None = None,
                    seed: int = 0) -> Path:
    """The posterior means of ``sentences`` projected on their first two principal components
    (PCA by the SVD of the centred means), one panel coloured by sentence length and, with
    ``labels`` (the embedded corpus), one per attribute; codes drawn from N(0, I) and, where the
    run has one, from its fitted prior, projected the same way, drawn over them; and beside it the
    KL of each latent dimension, KL_i = E_x[0.5 (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2)], sorted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    posterior = run.encode(sentences)
    means = posterior.mean.double().cpu()
    centre = means.mean(dim=0)
    _, singular, basis = torch.linalg.svd(means - centre, full_matrices=False)
    share = (singular**2 / (singular**2).sum()).tolist()
    project = lambda codes: ((codes.double().cpu() - centre) @ basis[:2].T).numpy()  # noqa: E731
    points = project(means)
    generator = torch.Generator().manual_seed(seed)
    overlays = [("z ~ N(0, I)", project(torch.randn(len(sentences) // 4 or 1, means.shape[1], generator=generator)), "0.55")]
    if run.has_fitted_prior():
        overlays.append(("fitted prior", project(run.prior_density("fitted").sample(len(sentences) // 4 or 1, generator)), "black"))
    lengths = [len(sentence.split()) for sentence in sentences]
    panels = [("length (words)", lengths)]
    for name in ("topic", "sentiment", "tense", "number") if labels else ():
        panels.append((name, [label.get(name) for label in labels]))
    # a flow's KL does not split by dimension: its base Gaussian's does, as seqvae eval reports it
    kl = getattr(posterior, "base", posterior).kl_per_dimension().double().mean(dim=0).cpu()
    columns = min(3, len(panels) + 1)
    rows = -(-(len(panels) + 1) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.4 * columns, 4.2 * rows), squeeze=False)
    axes = list(grid.flat)
    for axis in axes[len(panels) + 1:]:
        axis.set_visible(False)
    for axis, (name, values) in zip(axes, panels):
        if name.startswith("length"):
            shown = axis.scatter(points[:, 0], points[:, 1], c=values, s=5, cmap="viridis", alpha=0.7)
            figure.colorbar(shown, ax=axis, fraction=0.046)
        else:
            for index, value in enumerate(sorted({v for v in values if v is not None}, key=str)):
                chosen = [i for i, v in enumerate(values) if v == value]
                axis.scatter(points[chosen, 0], points[chosen, 1], s=5, alpha=0.7, color=f"C{index}", label=str(value))
            axis.legend(fontsize=7, markerscale=2, loc="best")
        for label, drawn, colour in overlays:
            axis.scatter(drawn[:, 0], drawn[:, 1], s=4, marker="x", color=colour, alpha=0.5, label=label if name.startswith("length") else None)
        if name.startswith("length"):
            axis.legend(fontsize=7, markerscale=2, loc="best")
        axis.set_title(f"codes by {name}", fontsize=9)
        axis.set_xlabel(f"PC 1 ({share[0]:.0%} of the variance)", fontsize=8)
        axis.set_ylabel(f"PC 2 ({share[1]:.0%})" if len(share) > 1 else "PC 2", fontsize=8)
    order = torch.argsort(kl, descending=True)
    bars = axes[len(panels)]
    bars.bar(range(len(order)), kl[order].numpy(), color="C0")
    bars.set_xticks(range(len(order)), [str(int(i)) for i in order], fontsize=6, rotation=90)
    of = " of the flow's base Gaussian" if hasattr(posterior, "base") else ""
    bars.set_title(f"KL per latent dimension{of} (total {float(kl.sum()):.2f} nats)", fontsize=9)
    bars.set_xlabel("dimension, by KL", fontsize=8)
    bars.set_ylabel("nats", fontsize=8)
    return save_png(figure, path)
