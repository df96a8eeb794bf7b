"""Output SQNRs of many models that each change a few nodes of one base model, each measured by running
only what it changes (graph.suffix) on the tensors the base computes alike, taken from one run of the
base. The float16 fallback ranks every layer kept float32 alone this way: on PP-OCRv4's text detector
at 640x640 a trial runs 60 % of the network's multiply-adds on average, and its 64 trials take 10 s
instead of 18 s (YOLOX-Nano's whole float16 convert: 25 s -> 13 s, the same layer kept).

A float32 model gives the figures of running each candidate whole. A float16 one, in onnxruntime's CPU
provider, need not: that provider runs a float16 op it has no float16 kernel for in float32 and hands
the next such op its float32 result, while the tensors a suffix reads come to it as the base's float16
outputs, rounded. On PP-OCRv4's 64 trials the figures moved by 0.05 dB (median), 0.9 dB at most, and the
ranking's first layer stayed first; the fallback measures every layer it keeps on the whole model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx

from quantkit.errors import ModelError
from quantkit.graph.augment import with_outputs
from quantkit.graph.query import GraphIndex
from quantkit.graph.suffix import Base, downstream_reads, suffix_of
from quantkit.planner.at_output import output_noise
from quantkit.results import Feed, Runs, sample_batches
from quantkit.runtime import Session, fits_one_message

# Bytes of the base's tensors held for the trials (every run): above it each trial runs whole. PP-OCRv4's
# text detector at 640x640 holds 90 MB per sample for its 64 layers.
HELD_BYTES = 512 * 2**20
Values = dict[str, np.ndarray]


class SuffixScreen:
    """Trials on `base` (a model that reads `samples` and outputs what `reference` holds, as
    fallback.output_sqnr measures), each changing some of `nodes`."""

    def __init__(
        self,
        base: onnx.ModelProto,
        nodes: Iterable[str],
        reference: Runs,
        samples: Feed,
        threads: int = 0,
    ) -> None:
        self.base, self.reference, self.threads = base, reference, threads
        self.wanted = list(reference[0]) if reference else []
        self.held: list[tuple[Values, Values]] | None = None
        if fits_one_message(base):  # (a suffix is built in memory)
            # a trial may read a graph input its base casts; one an initializer backs (IR 3 exports list
            # every weight as an input: CenterFace's opset-9 model) is no feed, and no trial's read
            inputs = set(GraphIndex(base).graph_inputs)
            needs = set().union(*downstream_reads(base, nodes).values())
            try:  # extra outputs onnxruntime refuses: each trial runs whole
                self.held = self._run_base(sorted(needs | inputs), inputs, samples) if needs else None
            except ModelError:
                self.held = None
        self.compared = Base.of(base) if self.held is not None else None  # what the trials are diffed with

    def sqnr(self, candidate: onnx.ModelProto) -> float | None:
        """The output SQNR of `candidate` on the samples; None where its suffix cannot measure it (the
        base's run was not held, a tensor it reads was not, subgraphs, or onnxruntime refuses it)."""
        if self.held is None or self.compared is None:
            return None
        try:
            suffix = suffix_of(candidate, self.compared, self.wanted, self.held[0][0])
        except (KeyError, ValueError):
            return None
        if any(run[t].shape != self.held[0][0][t].shape for run, _ in self.held for t in suffix.reads):
            return None
        noise = output_noise(candidate, list(self.reference[0]) if self.reference else ())
        try:  # a suffix onnxruntime refuses: the whole model says whether the candidate runs
            session = Session.of(suffix.model, self.threads) if suffix.model.graph.node else None
            for (run, outputs), ref in zip(self.held, self.reference, strict=True):
                got = {t: outputs[t] for t in suffix.passed}
                if session is not None:
                    got.update(session.run({t: run[t] for t in suffix.reads}))
                noise.update(ref, got)
        except ModelError:
            return None
        return noise.sqnr_db

    def _run_base(
        self, needs: Sequence[str], inputs: set[str], samples: Feed
    ) -> list[tuple[Values, Values]] | None:
        """The base's values of the tensors the trials read (graph inputs, `inputs`: the feed's) and of
        the wanted ones, on each run; None above HELD_BYTES."""
        outputs = sorted({*(n for n in needs if n not in inputs), *self.wanted})
        session = Session.of(with_outputs(self.base, outputs, typed=False), self.threads)
        held, total = [], 0
        for chunk in sample_batches(samples, session.fixed_batch or 1):
            fed, run = session.feed(chunk), session.run(chunk)
            reads = {n: fed[n] if n in inputs else run[n] for n in needs}
            measured = {w: run[w] for w in self.wanted}
            total += sum(v.nbytes for v in [*reads.values(), *measured.values()])
            if total > HELD_BYTES:
                return None
            held.append((reads, measured))
        return held
