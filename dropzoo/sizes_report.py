"""sizes.md and sizes.png: each variant and planned contrast against the training size.

A comparison whose runs trained on several `--train_size` values carries
the curves `curve` finds; report.write renders them here, passing its
accuracy column, its contrasted metrics and how it writes a cell and a verdict.
"""
import numpy as np

from dropzoo import plots
from dropzoo import records
from dropzoo import stats

SIZE_FIELD = "train_size"


def _size_family(label, size):
    """A variant's label without its `-train_size<N>` part, and without its rate where the comparison chose one
    per size (`-rate<r>`; a placement's chosen rate may differ between sizes): what one curve over sizes shares."""
    return records.without_rate(label.replace(f"-{SIZE_FIELD}{size}", ""))


def curve(rows, table, contrasts):
    """Each variant and contrast against the training size; None unless the runs trained on several.

    Returns {"sizes": [...], "variants": {family: [(size, table entry)]},
    "contrasts": {family: [(size, contrast entry)]}}: a family is a label
    without its `-train_size<N>` (e.g. `study_cnn/conv - study_cnn/none`),
    and a contrast joins one only where both its sides trained on one size.
    Sizes ascend within each family.
    """
    size_of = {r["variant"]: r["config"].get(SIZE_FIELD) for r in rows}
    sizes = sorted({size for size in size_of.values() if size is not None})
    if len(sizes) < 2:
        return None
    variants, curves = {}, {}
    for entry in table:
        size = size_of.get(entry["variant"])
        if size is not None:
            variants.setdefault(_size_family(entry["variant"], size), []).append((size, entry))
    for entry in contrasts:
        size = size_of.get(entry["a"])
        if size is not None and size_of.get(entry["b"]) == size and not entry["identical"]:
            family = f"{_size_family(entry['a'], size)} - {_size_family(entry['b'], size)}"
            curves.setdefault(family, []).append((size, entry))
    for points in (*variants.values(), *curves.values()):
        points.sort(key=lambda point: point[0])
    return {"sizes": sizes, "variants": variants, "contrasts": curves}


def _ci_text(result, contrasted):
    scale, digits = contrasted.scale, contrasted.digits
    if result.get("no_spread"):  # one difference at every seed: no interval (the comparison's notes say so)
        return f"{result['difference'] * scale:+.{digits}f} (no spread)"
    return (f"{result['difference'] * scale:+.{digits}f} "
            f"[{result['ci_low'] * scale:+.{digits}f}, {result['ci_high'] * scale:+.{digits}f}]")


def markdown(sizes, accuracy, contrasts, cell, verdict_text, seeds_text):
    """Per contrast family, one row per training size: both sides' accuracy, then each metric's Δ and verdict."""
    lines = ["Each planned contrast at each training size (A - B, paired by seed; the verdicts are the "
             "contrasts' own, Holm-adjusted over all of them). The training size is --train_size: the examples "
             "drawn, of which --validation_fraction is held out for validation. A and B are each variant's mean "
             "over its own seeds (their count in brackets where it is not the paired seeds'), and its rate where "
             "one was chosen at that size.", ""]
    means = {e["variant"]: e for points in sizes["variants"].values() for _, e in points}
    for family, points in sizes["contrasts"].items():
        head = ["training size", "seeds", "A: test acc % (mean ± std)", "B: test acc % (mean ± std)"]
        for c in contrasts:
            head += [f"Δ {c.name} ({c.unit}) [95% CI]", "verdict"]
        lines += [f"**{family}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for size, e in points:
            cells = [str(size), seeds_text(e)]
            paired = (e.get(accuracy.metric) or {}).get("n")
            for side in (e["a"], e["b"]):
                dropout = means[side].get("sites") not in (None, "", "none")  # (a variant without: no rate)
                own, rate = means[side]["seeds"], records.rate_of(side) if dropout else None
                score = means[side].get(accuracy.metric)  # (none: every seed diverged)
                counted = score is not None and score.get("n", own) != own  # the cell says "(k of n seeds)" itself
                cells.append((cell(means[side], accuracy) or "no finite score") + (f" (rate {rate})" if rate else "")
                             + (f" ({own} seeds)" if paired is not None and own != paired and not counted else ""))
            for c in contrasts:
                result = e[c.metric]
                if result["n"] < 2:  # no interval (as the comparison's table says)
                    difference = f"{result['difference'] * c.scale:+.{c.digits}f}" if result["n"] else ""
                    cells += [difference, f"inconclusive ({result['diverged']})" if result.get("diverged")
                              else "needs 2 or more seeds"]  # (as the comparison's table says)
                else:
                    cells += [_ci_text(result, c), verdict_text(result, c)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(path, sizes, accuracy, contrasts, title=""):
    """Test accuracy per variant, then each contrast's Δ per metric (95% CI, ±margin), against the training size."""
    fig, axes = plots.pyplot().subplots(1, 1 + len(contrasts), figsize=(6 * (1 + len(contrasts)), 4.5))
    for family, points in sizes["variants"].items():
        xs = [size for size, _ in points]
        accs = [e.get(accuracy.metric) or {"mean": np.nan, "ci95": np.nan} for _, e in points]  # (all diverged)
        axes[0].errorbar(xs, [100 * s["mean"] for s in accs],
                         yerr=[0 if np.isnan(s["ci95"]) else 100 * s["ci95"] for s in accs],
                         marker="o", capsize=3, label=family)
    axes[0].set_ylabel("test accuracy (%), mean ± 95% CI")
    axes[0].set_title("Test accuracy against the training size", fontsize=9)
    for ax, c in zip(axes[1:], contrasts):
        margin = None
        for family, points in sizes["contrasts"].items():
            results = [(size, e[c.metric]) for size, e in points if e[c.metric] is not None]
            if not results:
                continue
            margin = results[0][1]["margin"] * c.scale
            bars = [stats.error_bar(r) for _, r in results]
            ax.errorbar([size for size, _ in results], [r["difference"] * c.scale for _, r in results],
                        yerr=[[below * c.scale for below, _ in bars], [above * c.scale for _, above in bars]],
                        marker="o", capsize=3, label=family)
        if margin is not None:
            ax.axhspan(-margin, margin, color="tab:green", alpha=0.12, label=f"±margin ({margin:g} {c.unit})")
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_ylabel(f"Δ {c.name} ({c.unit}), A - B, with 95% CI")
        ax.set_title(f"{c.name}: the contrasts against the training size", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sizes["sizes"], [str(size) for size in sizes["sizes"]])
        ax.minorticks_off()
        ax.set_xlabel("--train_size (examples, validation hold-out included)")
        if ax.lines or ax.collections:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plots.save(fig, path)
