"""junit.xml of shrink: one test case per gate, for CI systems that show test results."""

from __future__ import annotations

from xml.etree import ElementTree

from quantkit.outcomes import ShrinkResult
from quantkit.reports.formats import GATE_LABELS, bound_text, gate_figure, shrink_warnings
from quantkit.strict_json import home_short


def junit_xml(result: ShrinkResult) -> str:
    """One test case per gate; a failing gate carries a <failure> with the figure and its limit. Each has
    the `time` the strict JUnit schema asks for (hq109 F11), 0: a gate reads a figure measured before it,
    and a wall time would make every run's file differ."""
    failures = sum(not g.passed for g in result.gates)
    suite = ElementTree.Element(
        "testsuite",
        name="quantkit shrink",
        tests=str(len(result.gates)),
        failures=str(failures),
        errors="0",
        time="0",
    )
    for g in result.gates:
        case = ElementTree.SubElement(suite, "testcase", classname="quantkit.shrink", name=g.name, time="0")
        if not g.passed:
            measured = gate_figure(g)  # hq71 F7: the reference's read '1.00 warnings on FP32'
            failure = ElementTree.SubElement(
                case,
                "failure",
                message=_legal(f"{GATE_LABELS[g.name]} {measured} {g.unit}, limit {bound_text(g)}"),
            )
            why = result.comparison.reference_findings if g.name == "reference" else ()
            failure.text = _legal(
                "\n".join((f"model {home_short(result.model)}, output {home_short(result.output)}", *why))
            )
    warned = shrink_warnings(result)
    if warned:  # shown beside the test results by CI systems that read junit
        ElementTree.SubElement(suite, "system-err").text = _legal("\n".join(f"warning: {w}" for w in warned))
    ElementTree.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(suite, encoding="unicode") + "\n"


def _legal(text: str) -> str:
    """text with the characters XML 1.0 forbids (C0 controls but tab, newline and return; lone surrogates,
    a file name's undecodable bytes) written as escapes: a model named 'sq\\x01net.onnx' made junit.xml
    unparseable (hq71 F8)."""
    return "".join(c if _allowed(c) else _escaped(ord(c)) for c in text)


def _allowed(c: str) -> bool:
    return c in "\t\n\r" or (c >= " " and not 0xD800 <= ord(c) <= 0xDFFF and c not in "\ufffe\uffff")


def _escaped(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:  # a byte no encoding decoded (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
