"""One visual style for every figure: a seaborn theme, one colour-blind-safe colour per variant
(Okabe-Ito), the variants always in the order Base, RL, SFT, SFT+RL, and every figure saved as
PNG and PDF under ``results/<profile>/figures/``, named after the paper's figure numbers.

>>> COLORS["Base"], list(COLORS) == list(VARIANTS)
('#000000', True)
"""
from __future__ import annotations

from pathlib import Path

from rlsft import VARIANTS
from rlsft.io import atomic_path

# Okabe & Ito (2008) colour-blind-safe palette
COLORS = {"Base": "#000000", "RL": "#D55E00", "SFT": "#0072B2", "SFT+RL": "#009E73"}
MARKERS = {"Base": "o", "RL": "s", "SFT": "^", "SFT+RL": "D"}
ARROWS = (("Base", "RL"), ("Base", "SFT"), ("SFT", "SFT+RL"))
"""The paper's training steps, drawn as arrows from the earlier to the later variant."""


def use_style() -> None:
    """Apply the companion's seaborn theme (call once per notebook)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "legend.frameon": False, "pdf.fonttype": 42})


def present_variants(values) -> tuple[str, ...]:
    """The variants found in ``values`` (a table's ``variant`` column), in the canonical order: a
    profile may hold only some of them, and its figures show only those.

    >>> present_variants(["SFT", "Base", "SFT"])
    ('Base', 'SFT')
    """
    have = set(values)
    return tuple(v for v in VARIANTS if v in have)


def palette(variants=VARIANTS) -> list[str]:
    return [COLORS[v] for v in variants]


def save(fig, name: str, folder: str | Path, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<folder>/<name>.png`` and ``.pdf`` atomically; returns the paths."""
    folder = Path(folder)
    out = []
    for ext in formats:
        path = folder / f"{name}.{ext}"
        with atomic_path(path, f".{ext}") as tmp:
            fig.savefig(tmp, format=ext)
        out.append(path)
    return out


def variant_legend(ax, variants=VARIANTS, **kw) -> None:
    """A legend with one entry per variant in the canonical order and colours."""
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=COLORS[v], marker=MARKERS[v], lw=0, label=v) for v in variants]
    ax.legend(handles=handles, **kw)
