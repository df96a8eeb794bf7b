"""junit.xml of shrink: one test case per gate, for CI systems that show test results."""

from __future__ import annotations

from xml.etree import ElementTree

from quantkit.outcomes import ShrinkResult
from quantkit.reports.formats import GATE_LABELS, bound_text, figure, shrink_warnings


def junit_xml(result: ShrinkResult) -> str:
    """One test case per gate; a failing gate carries a <failure> with the figure and its limit."""
    failures = sum(not g.passed for g in result.gates)
    suite = ElementTree.Element(
        "testsuite", name="quantkit shrink", tests=str(len(result.gates)), failures=str(failures), errors="0"
    )
    for g in result.gates:
        case = ElementTree.SubElement(suite, "testcase", classname="quantkit.shrink", name=g.name)
        if not g.passed:
            failure = ElementTree.SubElement(
                case,
                "failure",
                message=f"{GATE_LABELS[g.name]} {figure(g.measured)} {g.unit}, limit {bound_text(g)}",
            )
            failure.text = f"model {result.model}, output {result.output}"
    warned = shrink_warnings(result)
    if warned:  # shown beside the test results by CI systems that read junit
        ElementTree.SubElement(suite, "system-err").text = "\n".join(f"warning: {w}" for w in warned)
    ElementTree.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(suite, encoding="unicode") + "\n"
