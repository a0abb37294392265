"""Every published figure in wattserve.estimate.validation holds within its stated tolerance."""

from __future__ import annotations

import pytest

from wattserve.estimate.validation import PUBLIC_FIGURES, PublicFigure, check, markdown_table


@pytest.mark.parametrize("fig", PUBLIC_FIGURES, ids=lambda f: f"{f.case[:40]}-{f.metric}")
def test_public_figure_within_tolerance(fig: PublicFigure) -> None:
    low, high, ok, err = check(fig)
    assert ok, (
        f"{fig.case}: {fig.metric} published {fig.published}, predicted {low}..{high} ({err:+.0%})"
    )


def test_docs_table_is_current() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "accuracy.md").read_text()
    assert markdown_table() in doc, "regenerate: python -m wattserve.estimate.validation"
