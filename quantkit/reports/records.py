"""The JSON records (versioned schemas) of compare, sensitivity and shrink, and sensitivity's exclusions
file."""

from __future__ import annotations

import json
import re
from typing import Any

from quantkit.outcomes import ComparisonResult, SensitivityReport, ShrinkResult
from quantkit.strict_json import home_folder, json_safe


def comparison_dict(result: ComparisonResult) -> dict[str, Any]:
    """compare's JSON file (ComparisonResult.to_dict, paths under the home folder as ~/...: a report
    shared as a CI artifact named the user's home, hq107 F10; the API's to_dict keeps paths it can open:
    hq108 F7)."""
    return _shared(result.to_dict())


def sensitivity_dict(result: SensitivityReport) -> dict[str, Any]:
    """sensitivity's JSON file (SensitivityReport.to_dict; home paths as comparison_dict's)."""
    return _shared(result.to_dict())


def shrink_dict(result: ShrinkResult) -> dict[str, Any]:
    """shrink's report.json (ShrinkResult.to_dict; home paths as comparison_dict's)."""
    return _shared(result.to_dict())


def _shared(record: dict[str, Any]) -> dict[str, Any]:
    shared: dict[str, Any] = json_safe(record, home_folder())
    return shared


UNMEASURED_KEEP = 3  # layers written where no set was measured together (--top 0) and --keep is not given


def _most(result: SensitivityReport, keep: int | None) -> int:
    return keep if keep is not None else len(result.layers) if result.cumulative else UNMEASURED_KEEP


def exclusion_count(result: SensitivityReport, keep: int | None) -> int:
    """How many of the top layers the exclusions file lists (exclusions_file)."""
    best = result.best_together(_most(result, keep))
    return min(_most(result, keep), len(result.layers)) if best is None else best


def exclusions_warning(result: SensitivityReport, keep: int | None) -> str | None:
    """A warning where the file lists every ranked layer: convert --exclude-from it writes no INT8 layer
    (hunt39: --top 100 measured the all-float set at inf dB and wrote all 49 layers without a word)."""
    count = exclusion_count(result, keep)
    if count < len(result.layers) or count <= 1:
        return None
    return (
        f"the exclusions file lists all {count} ranked layers: convert --exclude-from it keeps every one "
        "float; give --keep a smaller count"
    )


def exclusions_file(result: SensitivityReport, keep: int | None, model: str) -> str:
    """The top layers, one per line, for convert --exclude-from: of the top-k sets kept float together
    (result.cumulative, k at most `keep`; None: any measured), the one that measured best (fewest on a
    tie); the top `keep` where none was measured. A PP-OCRv5 recogniser's top 3 together measured 5.59 dB,
    below its top 1 alone (7.48 dB), and all 3 were written; PaddleOCR's seal detector measured best with
    its top 4, and --keep 3 wrote a set that did worse on held-out images than none."""
    most = _most(result, keep)
    measured = [(k, db) for k, db, _ in result.cumulative if k <= most]
    top = min(most, len(result.layers))
    count = exclusion_count(result, keep)
    header = (  # hunt32: with --top 0 the file did not say that no set of them was measured together
        f"# quantkit sensitivity of {model}: the {count} layers whose float recovers the most output error, "
        "each measured alone (none together: --top 0; --keep sets how many)"
    )
    if measured:
        together = ", ".join(f"top {k}: {db:.2f} dB" for k, db in measured)
        cap = f", not {keep}" if keep is not None and count < top else ""
        header = (
            f"# quantkit sensitivity of {model}: the top {count} layer(s){cap}: kept float together "
            f"they measured best ({together})"
        )
    # hq125 F8: "recovers 57%" read as convert's gain, where convert's rebalancing had taken most of it
    lines = [
        header,
        "# measured with rebalancing off, as quantkit sensitivity measures; convert rebalances by default, "
        "where keeping them float may recover less: its summary measures the model written",
    ]
    for row in result.layers[:count]:
        # hunt52 C4: 'alone' where the layer's input path took 6 more float with it (convert's table says so)
        alone = f"with {len(row.with_it)} more layer(s) float (its input path)" if row.with_it else "alone"
        lines.append(
            f"{exclusion_entry(row.node)}  # {row.op_type}, recovers {100 * row.recovered:.0f}% {alone}"
        )
    return "\n".join(lines) + "\n"


# In an --exclude-from file a '#' that opens a line or follows white space starts a comment; a name that a
# plain line would not give back (one that opens with '#' or '"', holds white space before a '#', or
# starts or ends with white space) is written as a JSON string (hq169 F5, hq170 F2).
COMMENT = re.compile(r"(?:^|\s)#")


def exclusion_entry(name: str) -> str:
    """`name` as an --exclude-from line gives it back (exclusion_name)."""
    plain = name == name.strip() and not name.startswith(('"', "#")) and not COMMENT.search(name)
    return name if plain and name else json.dumps(name)


def exclusion_name(line: str) -> str:
    """The node name an --exclude-from line gives ('' for a blank or comment line). Raises ValueError
    saying what is wrong with a quoted name's line: not closed, or more than a comment after it (hq172
    F1: '"conv1", "conv2"', a list pasted in, kept conv1 float and dropped conv2 without a word)."""
    text = line.strip()
    if not text.startswith('"'):
        return COMMENT.split(line, maxsplit=1)[0].strip()
    try:
        name, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        raise ValueError("opens a quoted name it does not close; close it") from None
    rest = text[end:].strip().removeprefix(",").strip()  # hq173 F4: a list's body, one item a line
    if rest and not rest.startswith("#"):
        raise ValueError(
            f"holds more than a comment after the quoted name {text[:end]}: give one name per line"
        )
    return str(name)
