"""Why --max-drop cannot gate some outputs, and what to give instead: one line each."""

from __future__ import annotations


def values_refusal(
    option: str, values: frozenset[str], floor: str = "--min-sqnr DB for a floor on the output's SQNR"
) -> str:
    """Why `option` cannot gate a model whose outputs the graph computes as features (graph.output_kinds),
    and what to give instead (`floor`: the command's own figure for such outputs)."""
    names = ", ".join(repr(n) for n in sorted(values))
    return (
        f"{option} needs class scores to agree on, and the model's output {names} holds values (the graph "
        "computes it with a rectifier or a normalisation: an embedding or a regression), whose top-1 says "
        f"nothing: give {floor} instead, or --output-kind classes (or --labels) if it holds a classifier's "
        "scores"
    )
