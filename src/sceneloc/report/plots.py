"""Report figures: error histogram (paper Fig. 2), confidence ROC (Fig. 3), error and confidence maps (Fig. 4),
pose error CDFs, top-down camera positions.

matplotlib is imported inside the functions (Agg backend) so that importing sceneloc stays fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sceneloc.report.diagnostics import (
    ERROR_MAP_MAX_M,
    INLIER_THRESHOLD_M,
    Diagnostics,
    Example,
    concat_finite,
    roc_curve,
)

# ============================================================================================= plots


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_error_histogram(diag: Diagnostics, path: Path, split: str) -> None:
    """Paper Fig. 2: normalised histograms of the coordinate errors of randomly sampled N_k points
    and of the most confident N_best of them (when the map has a confidence network)."""
    plt = _pyplot()
    sampled, confident = concat_finite(diag.sampled), concat_finite(diag.confident)
    cap = max(0.5, float(np.percentile(sampled, 95))) if sampled.size else 0.5
    bins = np.linspace(0, cap, 51)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [(sampled, f"random N_k = {diag.n_k}", "tab:gray")]
    if diag.confident:
        series.append((confident, f"{diag.n_best} most confident of them", "tab:blue"))
    for errs, label, colour in series:
        if errs.size:
            share = (errs < INLIER_THRESHOLD_M).mean()
            ax.hist(np.minimum(errs, cap), bins=bins, weights=np.full(errs.size, 1.0 / errs.size), alpha=0.6,
                    color=colour, label=f"{label}: {errs.size} points, {share:.0%} < 10 cm")
    ax.axvline(INLIER_THRESHOLD_M, color="k", ls="--", lw=1, label="inlier threshold 10 cm")
    ax.set_xlabel(f"scene coordinate error (m); last bin: >= {cap:.2f} m")
    ax.set_ylabel("share of points")
    note = "" if diag.confident else " (no confidence network: random only)"
    ax.set_title(f"Errors of the points used for pose estimation ({split} split){note}")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_roc(diag: Diagnostics, path: Path, split: str) -> dict[str, float]:
    """Paper Fig. 3: ROC of each confidence net for inlier detection (error < 10 cm); returns AUCs."""
    plt = _pyplot()
    labels = concat_finite(diag.roc_errors) < INLIER_THRESHOLD_M
    fig, ax = plt.subplots(figsize=(5.2, 5))
    aucs = {}
    for name, parts in diag.roc_scores.items():
        fpr, tpr, auc = roc_curve(np.concatenate(parts), labels)
        aucs[name] = auc
        ax.plot(fpr, tpr, lw=1.5, label=f"{name}: AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    only = "" if len(aucs) > 1 else " (only one net in this map)"
    ax.set_title(f"Inlier (< 10 cm) detection, {split} split{only}\n"
                 f"{labels.size} points, {labels.mean():.1%} inliers", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return aucs


def plot_examples(examples: list[Example], path: Path) -> None:
    """Paper Fig. 4: per frame a) input RGB, b) per-pixel coordinate error, c) confidence map."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(examples), 3, figsize=(12, 3.1 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples, strict=True):
        H, W = ex.image.shape[:2]
        extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # the thinned prediction grid covers the whole image
        row[0].imshow(ex.image)
        row[0].set_ylabel(ex.name, fontsize=8)
        panels = ((row[1], ex.error, "magma", ERROR_MAP_MAX_M, "error (m)", "no ground-truth depth"),
                  (row[2], ex.confidence, "viridis", 1.0, "confidence", "no confidence network"))
        for ax, data, cmap_name, vmax, unit, missing in panels:
            if data is None:
                ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes)
                continue
            cmap = plt.get_cmap(cmap_name).with_extremes(bad="0.75")  # grey: no ground truth (missing depth)
            im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=vmax, extent=extent,
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02, extend="max" if unit.startswith("error") else "neither",
                         label=unit)
    titles = ("a) input RGB", "b) scene coordinate error (grey: no depth)", "c) predicted confidence")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def plot_error_cdf(rot: np.ndarray, trans: np.ndarray, path: Path, title: str) -> None:
    """Cumulative share of frames below each rotation / translation error; failures (inf) keep the
    curves below 1. Log axes, with the paper's 5 deg / 5 cm marked."""
    plt = _pyplot()
    from matplotlib import ticker  # with pyplot: matplotlib loads only when a report is drawn
    n = len(rot)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, errs, floor, unit, scale in ((axes[0], rot, 1e-3, "deg", 1.0), (axes[1], trans, 1e-4, "cm", 100.0)):
        finite = np.sort(errs[np.isfinite(errs)]) * scale
        x = np.maximum(finite, floor * scale)  # exact zeros cannot go on a log axis
        if x.size:
            ax.step(np.r_[x[:1], x], np.r_[0, np.arange(1, x.size + 1) / n], where="post", color="tab:blue")
        else:
            ax.text(0.5, 0.5, "every frame failed", ha="center", transform=ax.transAxes)
        ax.axvline(5.0, color="tab:red", ls="--", lw=1, label=f"5 {unit} (the paper's threshold)")
        ax.set_xscale("log")
        # ticks at 1-2-5 steps, plain numbers: over less than a decade matplotlib labels every minor tick
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"{'rotation' if unit == 'deg' else 'translation'} error ({unit})")
        ax.set_ylabel("share of frames")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fails = int(np.sum(~np.isfinite(rot)))
    fig.suptitle(f"{title}: cumulative pose errors ({n} frames, {fails} failures counted as infinite)", fontsize=10)
    _save(fig, path)


def plot_topdown(gt: np.ndarray, est: list[np.ndarray | None], path: Path, title: str) -> None:
    """Estimated vs ground-truth camera centres ``(N, 3)`` from above: the two world axes along which
    the ground-truth positions spread most; lines join each estimate to its ground truth."""
    plt = _pyplot()
    a, b = sorted(np.argsort(-gt.std(axis=0))[:2])
    names = "xyz"
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot(gt[:, a], gt[:, b], "-", color="0.7", lw=0.8, zorder=1, label="ground-truth trajectory")
    ax.scatter(gt[:, a], gt[:, b], s=36, facecolors="none", edgecolors="tab:green", label="ground truth", zorder=2)
    ok = [i for i, e in enumerate(est) if e is not None]
    failed = [i for i, e in enumerate(est) if e is None]
    found = [e for e in est if e is not None]
    if ok:
        E = np.stack(found)
        lines = ax.plot(np.stack([gt[ok, a], E[:, a]]), np.stack([gt[ok, b], E[:, b]]), "-", color="tab:orange",
                        lw=0.6, alpha=0.7, zorder=1)
        lines[0].set_label("estimate to its ground truth")
        ax.scatter(E[:, a], E[:, b], s=10, color="tab:blue", label="estimate", zorder=3)
    if failed:
        ax.scatter(gt[failed, a], gt[failed, b], s=40, marker="x", color="tab:red",
                   label=f"failed ({len(failed)})", zorder=4)
    # Keep the view on the trajectory: one wild estimate would otherwise shrink it to a dot.
    lo, hi = gt[:, [a, b]].min(0), gt[:, [a, b]].max(0)
    margin = max(1.0, 0.5 * float((hi - lo).max()))
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(lo[1] - margin, hi[1] + margin)
    outside = sum(1 for e in found if np.any(np.abs(e[[a, b]] - (lo + hi) / 2) > (hi - lo) / 2 + margin))
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"world {names[a]} (m)")
    ax.set_ylabel(f"world {names[b]} (m)")
    extra = ""
    if outside == 1:
        extra = "\n1 estimate lies outside the view (its line leaves it)"
    elif outside > 1:
        extra = f"\n{outside} estimates lie outside the view (their lines leave it)"
    ax.set_title(f"{title}: camera positions, top-down ({names[a]}-{names[b]} plane){extra}", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_reliability(bins: list[dict], op: dict, path: Path, title: str) -> None:
    """Reliability diagram of the per-pose probabilities: observed share within 5 cm / 5 deg
    against the mean predicted probability of each bin (the diagonal is perfect calibration),
    with each bin's frame count; ``op`` is the operating point noted in the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    full = [b for b in bins if b["frames"]]
    ax.plot([b["predicted"] for b in full], [b["observed"] for b in full], "o-", color="tab:blue", label="sceneloc")
    for b in full:
        ax.annotate(str(b["frames"]), (b["predicted"], b["observed"]), textcoords="offset points", xytext=(6, -10),
                    fontsize=8)
    for edge in {b["low"] for b in bins} | {1.0}:
        ax.axvline(edge, color="#ddd", lw=0.8, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("predicted probability of within 5 cm / 5 deg")
    ax.set_ylabel("observed share within 5 cm / 5 deg")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title}\nreject p < {op['min_probability']:g}: {op['wrong_rejected']:.0%} of wrong poses rejected, "
                 f"{op['right_kept']:.0%} of right kept", fontsize=9)
    _save(fig, path)
