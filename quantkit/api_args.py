"""The Python API's arguments: the settings its keywords build, each wrong one a one-line ConfigError."""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from quantkit.array_files import Sample
from quantkit.config import (
    BUDGET_OPTIONS,
    AccuracyBudget,
    BudgetMetric,
    ConvertConfig,
    ImageSelection,
    OutputKind,
    PreprocessOptions,
    Target,
)
from quantkit.config.base import as_count, as_enum, as_path
from quantkit.config.choices import refuse_unread
from quantkit.config.preprocessing import Preprocess as Resolved
from quantkit.config.preprocessing import ResizeMode
from quantkit.data import read_data
from quantkit.errors import ConfigError, QuantkitError
from quantkit.evaluate.detector_options import detector_fields
from quantkit.pipeline import shrink_cleanup

SHRINK_OWN = ("workers", "ray", "threads", "progress")  # convert()'s arguments that shrink takes itself
P = ParamSpec("P")
R = TypeVar("R")
# what a keyword of an earlier release, or another tool's, is called here (hq128 F2, hq144 F13)
RENAMED = {
    # hq157 F4: it said .best_together(n) gave the layers; it gives how many of the ranking's first
    ("sensitivity", "keep"): "the report's .best_together(n) gives how many of its first layers to keep "
    "float together, at most n: k = report.best_together(n); [row.node for row in report.layers[:k]]",
    ("shrink", "method"): "shrink takes convert's options as convert_options={'method': ...}",
}


def keywords(function: Callable[P, R]) -> Callable[P, R]:
    """`function` refusing an unknown keyword or a wrong number of positional arguments with a one-line
    ConfigError that lists what it takes (hq144 F13: Python's own TypeError, 'got an unexpected keyword
    argument', from shrink(method=...), sensitivity(keep=...) and check(model, 'tensorrt'))."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(_misuse(function.__name__, signature, kwargs, exc)) from None
        return function(*args, **kwargs)

    return checked


def _misuse(call: str, signature: inspect.Signature, given: dict[str, Any], exc: TypeError) -> str:
    """The one line for arguments `signature` cannot bind."""
    named = [n for n, p in signature.parameters.items() if p.kind is not p.VAR_KEYWORD]
    unknown = sorted(set(given) - set(signature.parameters))
    if not unknown and "missing" in str(exc):
        return f"quantkit.{call}: {exc}; see help(quantkit.{call})"
    if not unknown:
        by_name = "give the model (compare: both) by position and every other argument by name"
        return f"quantkit.{call}: {exc}; {by_name}, see help(quantkit.{call})"
    name = unknown[0]
    hint = RENAMED.get((call, name)) or next(
        (f"did you mean {m}=?" for m in difflib.get_close_matches(name, named, 1)), None
    )
    return f"quantkit.{call} has no option {name}{f' ({hint})' if hint else ''}; it takes {', '.join(named)}"


def shrink_convert(options: dict[str, Any], compact: bool, target: str) -> ConvertConfig:
    """shrink's ConvertConfig: convert_options, with shrink's own compact and target."""
    # hq144 F10: workers= was 'convert has no option workers', which convert() takes
    own = sorted(set(options) & {"compact", "target", "fp8", *SHRINK_OWN, *BUDGET_OPTIONS})
    if own:
        raise ConfigError(
            f"shrink's convert_options cannot set {', '.join(own)}: pass compact=, target=, workers=, ray=, "
            "threads= and progress= to shrink itself, and max_drop= as its gate"
        )
    fixed = sorted(set(options) & {"to", "output", "calibration"})
    if fixed:  # hq169 F2: 'convert has no option to (did you mean to=?); it takes ..., to, ...'
        raise ConfigError(
            f"shrink's convert_options cannot set {', '.join(fixed)}: shrink converts to int8 with the table "
            "it calibrates and writes the model in output_dir (quantkit.convert takes them)"
        )
    refuse_unread(options, lambda name: f"{name}=")  # hq77 4: recorded in report.json, shaped nothing
    return ConvertConfig(
        **options_of(ConvertConfig, options, "int8", shrink=True),
        compact=compact,
        target=as_enum(Target, target, "target"),
    )


def data_of(data: Any, num_images: int | None, seed: int) -> tuple[ImageSelection, Iterable[Sample] | None]:
    """(the images to read, or the arrays to stream instead)."""
    with arguments("data"):
        return read_data(data, num_images, seed)


# convert's own keywords beside its config's (hq157 F2: left out of the list an unknown one gets)
CONVERT_OWN = ("output", "to", "calibration", "progress", "workers", "ray", "threads")


def options_of(kind: type[Any], options: dict[str, Any], to: str, shrink: bool = False) -> dict[str, Any]:
    """The options `kind` (ConvertConfig or Float16Config) takes; any other is an error that lists every
    keyword convert takes with `to` (its accuracy budget's for int8), the nearest named; shrink: those
    shrink's convert_options takes (hq170 F3: its line listed and suggested ones shrink refuses)."""
    known = set(kind.__dataclass_fields__) - {"to", "fp8"}  # hq72 3: to= says fp8, past its refusals
    unknown = sorted(set(options) - known - set(BUDGET_OPTIONS))
    if unknown or (to != "int8" and set(options) & set(BUDGET_OPTIONS)):
        wrong = unknown or sorted(set(options) & set(BUDGET_OPTIONS))
        if shrink:
            takes, who = sorted(known - {"compact", "target"}), "shrink's convert_options"
        else:
            takes = sorted(known | set(CONVERT_OWN) | (set(BUDGET_OPTIONS) if to == "int8" else set()))
            who = f"quantkit.convert(to={to!r})"
        near = difflib.get_close_matches(wrong[0], takes, 1)
        hint = f" (did you mean {near[0]}=?)" if near else ""
        raise ConfigError(f"{who} has no option {', '.join(wrong)}{hint}; it takes {', '.join(takes)}")
    return {k: v for k, v in options.items() if k in known}


def budget_of(options: dict[str, Any]) -> AccuracyBudget | None:
    if options.get("max_drop") is None:
        given = sorted(name for name in BUDGET_OPTIONS if name != "max_drop" and name in options)
        if given:  # hunt38 F2: a metric='bogus' or a missing validation folder was ignored without a word
            verb = "applies" if len(given) == 1 else "apply"  # hq103 F9: "output_kind only apply"
            raise ConfigError(f"{', '.join(given)} only {verb} with max_drop= (convert's accuracy budget)")
        return None
    if options.get("validation") is None:
        raise ConfigError("max_drop needs validation=: an image folder held apart from calibration")
    with arguments("convert"):
        return AccuracyBudget(
            max_drop=options["max_drop"],
            validation=ImageSelection(  # hq72 4: validation="" (an unset variable) read the current folder
                as_path(options["validation"], "validation"),
                options.get("validation_images"),
                option="--validation-images",
            ),
            metric=as_enum(BudgetMetric, options.get("metric", "auto"), "metric"),
            labels=as_path(options["labels"], "labels") if options.get("labels") is not None else None,
            max_trials=as_count(options.get("max_trials", AccuracyBudget.max_trials), "max_trials"),
            timeout_s=options.get("timeout", AccuracyBudget.timeout_s),
            output_kind=as_enum(OutputKind, options.get("output_kind", "auto"), "output_kind"),
            **detector_fields(options.get("detector"), None, "detector"),
        )


@contextlib.contextmanager
def verdict_dropped(output_dir: Path, keep: Sequence[Path]) -> Iterator[None]:
    """A shrink refused before it runs removes the earlier run's verdict in output_dir, and says so, as the
    command line's does (hq145 F2: max_drop=-1 raised its ConfigError and left the last release's PASS
    junit.xml beside its model); `keep`: the inputs, never removed."""
    try:
        yield
    except QuantkitError as exc:
        try:
            said = shrink_cleanup.removed_line(shrink_cleanup.drop_earlier_verdict(output_dir, keep))
        except OSError as err:  # a folder that cannot be locked or read
            said = shrink_cleanup.not_removed(output_dir, err)
        exc.args = (f"{exc.args[0]}{said}", *exc.args[1:]) if exc.args else exc.args
        raise


@contextlib.contextmanager
def arguments(call: str) -> Iterator[None]:
    """An argument of the wrong type, met while the settings are built, as the one-line ConfigError every
    other bad argument raises (hunt32: min_sqnr="high" raised a TypeError from a comparison, a
    preprocess given as a dict an AttributeError deep inside calibration)."""
    try:
        yield
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"quantkit.{call}: an argument has the wrong type ({exc}); see help(quantkit.{call})"
            if call != "data"
            else f"quantkit: data, num_images or seed has the wrong type ({exc}); see help(quantkit)"
        ) from exc


def preprocess_of(preprocess: Any, call: str) -> PreprocessOptions:
    """The preprocessing asked for: a quantkit.Preprocess, or a table's own (CalibrateSummary.preprocess,
    the one the model's input resolved; hq144 F3: refused as 'not Preprocess') asked for again."""
    if isinstance(preprocess, Resolved):
        boxed = preprocess.resize in (ResizeMode.letterbox, ResizeMode.letterbox_center)
        return PreprocessOptions(
            mean=preprocess.mean,
            std=preprocess.std,
            bgr=preprocess.bgr,
            resize=preprocess.resize,
            input_size=(preprocess.height, preprocess.width),
            pad=preprocess.pad if boxed else None,
            input_values=tuple((fixed.name, fixed.values) for fixed in preprocess.fixed),
        )
    if preprocess is not None and not isinstance(preprocess, PreprocessOptions):
        raise ConfigError(
            f"quantkit.{call}: preprocess takes quantkit.Preprocess(...) (e.g. Preprocess(preset='unit')), "
            f"not {type(preprocess).__name__}"
        )
    return preprocess or PreprocessOptions()
