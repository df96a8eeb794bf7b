"""Well-known models from the public ONNX model zoo, downloaded once into a user cache and checked against
a pinned sha256 (the Git LFS object id of the file in github.com/onnx/models at a fixed commit)."""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from quantkit.errors import ConfigError, DownloadError
from quantkit.files import write_atomic

ZOO_URL = "https://media.githubusercontent.com/media/onnx/models"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ZooModel:
    """path: in onnx/models at `commit`; a .tar.gz holds the model as its one .onnx member."""

    name: str
    commit: str
    path: str
    sha256: str
    size: int
    about: str

    @property
    def archive(self) -> bool:
        return self.path.endswith(".tar.gz")


ZOO = {
    m.name: m
    for m in (
        ZooModel(
            "mobilenetv2",
            "2a67a85e670e61bf9819e9df6dae3771974552ff",
            "validated/vision/classification/mobilenet/model/mobilenetv2-12.tar.gz",
            "5f83b422708a708b592a5fd56d84710038511789df3ae510b84123930c37762d",
            13498787,
            "MobileNetV2 1.0, ImageNet-1k, opset 12; ImageNet preprocessing",
        ),
        ZooModel(
            "shufflenetv2",
            "4c46cd00fbdb7cd30b6c1c17ab54f2e1f4f7b177",
            "validated/vision/classification/shufflenet/model/shufflenet-v2-12.onnx",
            "ea69821b4dd374ae2f33f9710dd1229ac263d0ee5b5a46ca3521f6483e1ba035",
            9218556,
            "ShuffleNetV2 1.0, ImageNet-1k, opset 12; ImageNet preprocessing",
        ),
        ZooModel(
            "densenet121",
            "4c46cd00fbdb7cd30b6c1c17ab54f2e1f4f7b177",
            "validated/vision/classification/densenet-121/model/densenet-12.onnx",
            "0294e7e88e5b3360de9b0fdc321baf9e6ef18b7f058c4536caae3b9f18ed9ed5",
            32726877,
            "DenseNet-121, ImageNet-1k, opset 12; ImageNet preprocessing",
        ),
    )
}


def lookup(name: str) -> ZooModel:
    if name not in ZOO:
        raise ConfigError(f"--zoo {name!r} is not a known model; choose one of {', '.join(sorted(ZOO))}")
    return ZOO[name]


def fetch(model: ZooModel, cache_dir: Path, base_url: str = ZOO_URL, timeout: float = 60.0) -> Path:
    """The model's .onnx in cache_dir, downloaded and checked the first time. Nothing unverified is kept."""
    target = cache_dir / f"{model.name}-{model.sha256[:12]}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{model.commit}/{model.path}"
    with tempfile.TemporaryFile(dir=cache_dir) as download:
        digest = _download(url, download, model.size, timeout)
        if digest != model.sha256:
            raise DownloadError(
                f"{url} does not match its pinned sha256 ({digest[:12]}... instead of "
                f"{model.sha256[:12]}...); nothing kept; retry, or check for a proxy that rewrites downloads"
            )
        download.seek(0)
        data = _member(download, url) if model.archive else download.read()
    write_atomic(target, data, cache=True)
    return target


def _download(url: str, sink: IO[bytes], limit: int, timeout: float) -> str:
    digest, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DownloadError(f"{url} is larger than its pinned {limit} bytes; nothing was kept")
                digest.update(chunk)
                sink.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered HTTP {exc.code} ({exc.reason}); retry later") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}): no network? `quantkit demo` without --zoo runs offline"
        ) from exc
    return digest.hexdigest()


def _member(archive: IO[bytes], url: str) -> bytes:
    """The archive's one .onnx regular file, read in memory: nothing is extracted to disk by its name."""
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".onnx")]
            if len(members) != 1:
                raise DownloadError(f"{url} holds {len(members)} .onnx files, expected 1")
            handle = tar.extractfile(members[0])
            assert handle is not None
            return handle.read()
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{url} is not a readable .tar.gz ({exc})") from exc
