"""shrink's calibration cache: where it lives, the key a table is kept under, and the table a run reuses
or calibrates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from quantkit.calib import table as table_io
from quantkit.config import ShrinkConfig
from quantkit.errors import OutputError, QuantkitError
from quantkit.files import (
    cache_home,
    cached,
    require_writable,
)
from quantkit.graph import model_inputs, model_io
from quantkit.image_folders import select_images
from quantkit.images import list_digest, resolve_preprocess
from quantkit.parallel import Parallel
from quantkit.pipeline.progress import Progress
from quantkit.pipeline.run_calibrate import calibrate
from quantkit.pipeline.shrink_cleanup import (
    drop_damaged,
)
from quantkit.results import TABLE_VERSION, CalibrationTable
from quantkit.version import __version__


def default_cache_dir() -> Path | None:
    """Where shrink keeps calibration tables: $XDG_CACHE_HOME/quantkit/calibration or
    ~/.cache/quantkit/calibration; None where no home folder can be told (run_shrink then asks for
    --cache-dir)."""
    home = cache_home()
    return None if home is None else home / "quantkit" / "calibration"


def calibration_table(
    model_path: Path, config: ShrinkConfig, progress: Progress, parallel: Parallel
) -> tuple[Path, CalibrationTable, bool, float]:
    """(the table's path, the table, whether it came from the cache, seconds spent calibrating)."""
    if config.cache_dir is None:
        raise OutputError(  # hq116 F8: it did not say why there was none
            "shrink needs a cache folder for its calibration table, and there is no home folder here ($HOME "
            "unset or missing); give --cache-dir DIR or set XDG_CACHE_HOME"
        )
    # a failed first run leaves the cache folder it made (hq85 F9), which another run may be filling (hq91
    # F4: removed empty, it failed a shrink started beside it with the same new --cache-dir)
    fix = "give --cache-dir DIR (or set XDG_CACHE_HOME) to a writable folder"
    try:
        config.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the cache folder {config.cache_dir} ({exc.strerror}); {fix}"
        ) from exc
    model_sha256 = model_io.file_sha256(model_path)
    path = config.cache_dir / f"{cache_key(model_path, config, model_sha256)}.calib.json"
    damaged = False
    if path.exists() or path.is_symlink():  # a cache restored read-only serves its tables (hq73 12)
        try:
            loaded = table_io.load(path)
            if loaded.model_sha256 == model_sha256:
                return path, loaded, True, 0.0
        except QuantkitError:
            damaged = True  # a damaged cache entry is recalibrated over
    require_writable(config.cache_dir, fix)
    if damaged:
        drop_damaged(path, table_io.arrays_path(path))
    done = calibrate(model_path, path, config.calibration, progress, parallel=parallel)
    cached(path, table_io.arrays_path(path))
    return path, table_io.load(path), False, done.seconds


def cache_key(model_path: Path, config: ShrinkConfig, model_sha256: str) -> str:
    """sha256 over the model's bytes (model_sha256), the resolved preprocessing, the calibration images'
    names and contents and the calibration settings: a table is reused only when all of them match."""
    model = model_io.load_model(model_path)
    options = config.calibration.preprocess
    spec = model_inputs.image_input(model, options.fixed_names)
    preprocess = resolve_preprocess(options, spec, model_inputs.float_inputs(model))
    paths = select_images(config.calibration.images)
    key = {
        "model": model_sha256,
        "model_file": model_path.name,  # the table records it (hq109 F6: a copy's shrink read another's)
        "preprocess": preprocess.to_dict(),
        "images": list_digest(paths),
        "count": len(paths),
        "bins": config.calibration.bins,
        "batch_size": config.calibration.batch_size,
        "quantkit": __version__,
        "table_version": TABLE_VERSION,
        "reference_findings": True,  # tables that record them: an older cached one hid them (hq83 4)
        # what FP32's findings are judged as (hq145 F3: a table cached by a default run told a run given
        # --output-kind values to say so, and its model recorded that table's other sha256)
        "output_kind": config.calibration.output_kind.value,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
