"""Image folders: discovery, subsets, every pixel mode, resize modes, normalisation, bad files."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantkit.config import ImageSelection, Layout, Preprocess, PreprocessOptions, Preset, ResizeMode
from quantkit.errors import ConfigError, ImageError
from quantkit.image_folders import LeftOut, find_images, left_out, select_images, shortfall
from quantkit.images import ImageLoader, load_sample, resolve_preprocess
from quantkit.results import InputSpec


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if image.mode != "CMYK" else "JPEG")
    return buffer.getvalue()


def test_find_is_recursive_sorted_and_filters_suffixes(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.PNG", "a.jpg", "b/1.webp", "notes.txt", "c.jpeg", "d.bmp"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpg", "b/1.webp", "b/2.PNG", "c.jpeg", "d.bmp"]


def test_links_to_folders_are_not_followed(tmp_path: Path) -> None:
    """A link to a subfolder would list its images twice, one to a folder outside would leave the folder."""
    (tmp_path / "f" / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    for name in ("f/sub/a.png", "other/b.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "f" / "inner").symlink_to(tmp_path / "f" / "sub")
    (tmp_path / "f" / "outer").symlink_to(tmp_path / "other")
    assert find_images(tmp_path / "f") == [tmp_path / "f" / "sub" / "a.png"]


def test_what_a_folder_leaves_out_is_named(image_dir: Path, tmp_path: Path) -> None:
    """hq68 3, 4, 11, 13: a link to a folder of photos, a dangling link, phone HEIC files and a NAS's
    thumbnails were left out (or read) without a word; a folder of folder links was called 'empty' and a
    dangling link 'a link to image files outside it'. AVIF, JPEG 2000 and netpbm files are read."""
    folder = tmp_path / "set"
    (folder / "@eaDir" / "a.jpg").mkdir(parents=True)
    png = sorted(image_dir.rglob("*.png"))[0]
    (folder / "own.png").write_bytes(png.read_bytes())
    (folder / "@eaDir" / "a.jpg" / "SYNOFILE_THUMB_M.jpg").write_bytes(png.read_bytes())
    for suffix in (".avif", ".jp2", ".pnm"):
        Image.open(png).convert("RGB").save(folder / f"also{suffix}")
    (folder / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (folder / "dogs").symlink_to(image_dir / "dogs")
    (folder / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    found = find_images(folder)
    assert [p.name for p in found] == ["also.avif", "also.jp2", "also.pnm", "own.png"]
    assert all(load_sample(p.read_bytes(), PRE).shape == (3, 8, 8) for p in found)
    assert left_out(folder) == LeftOut(outside=0, folders=1, broken=1, unread=1, formats=(".heic",))
    assert shortfall(ImageSelection(folder), found) == (
        f"{folder}: 1 link(s) to folders are not followed (copy those folders in, or pass a folder that "
        "holds them); 1 broken link(s) left out; 1 file(s) in formats quantkit does not read (.heic) left "
        "out (convert them to JPEG or PNG)"
    )
    (folder / "again").symlink_to(folder / "@eaDir")  # hq70 5: one inside is no folder left out
    (folder / "share").symlink_to(tmp_path / "unmounted")  # hq70 8: a dangling link to a folder
    assert left_out(folder) == LeftOut(outside=0, folders=1, broken=2, unread=1, formats=(".heic",))
    only = tmp_path / "only-links"
    only.mkdir()
    (only / "dogs").symlink_to(image_dir / "dogs")
    with pytest.raises(
        ImageError, match=r"found under .*only-links: 1 link\(s\) to folders are not followed"
    ):
        find_images(only)
    assert left_out(image_dir) == LeftOut() and shortfall(ImageSelection(image_dir), []) is None


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(ImageError, match="no images"):
        find_images(tmp_path)


def test_subset_is_seeded_and_never_repeats_an_image(image_dir: Path) -> None:
    a = select_images(ImageSelection(image_dir, 5, seed=1))
    assert a == select_images(ImageSelection(image_dir, 5, seed=1))
    assert a != select_images(ImageSelection(image_dir, 5, seed=2))
    assert a == sorted(a)
    assert shortfall(ImageSelection(image_dir, 5), a) is None
    asked = ImageSelection(image_dir, 50)
    many = select_images(asked)
    assert many == select_images(ImageSelection(image_dir)) and len(set(many)) == len(many) == 24
    assert shortfall(asked, many) == (
        f"--num-images 50 asks for more images than {image_dir} holds; using all 24, each once"
    )


def test_hidden_files_and_macos_forks_are_not_images(image_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unzipped"
    (folder / "__MACOSX").mkdir(parents=True)
    (folder / ".git").mkdir()
    real = sorted(image_dir.rglob("*.png"))[0]
    (folder / "a.png").write_bytes(real.read_bytes())
    for junk in ("._a.png", "__MACOSX/._a.png", "__MACOSX/b.png", ".git/c.png"):
        (folder / junk).write_bytes(b"\0\5\26\7 resource fork")
    assert find_images(folder) == [folder / "a.png"]


PRE = Preprocess(height=8, width=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize=ResizeMode.squash)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16", "1"])
def test_every_pixel_mode_becomes_rgb(mode: str) -> None:
    image = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode)
    sample = load_sample(_png(image), PRE)
    assert sample.shape == (3, 8, 8) and sample.dtype == np.float32 and np.isfinite(sample).all()


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    sample = load_sample(_png(image), Preprocess(height=8, width=8, channels=1, mean=(0.0,), std=(1.0,)))
    assert sample.max() == pytest.approx(255.0)


def test_a_sixteen_bit_pgm_is_read_over_its_bit_depth_as_a_png_is() -> None:
    """hq129 F1: Pillow opens a PGM of maxval 65535 as mode I; quantkit judged it by its own values, and a
    dark frame (0..200 of 65535) was fed 257x brighter than the same pixels saved as a 16-bit PNG."""
    pixels = np.linspace(0, 200, 64).reshape(8, 8).astype(np.uint16)
    pgm = b"P5\n8 8\n65535\n" + pixels.astype(">u2").tobytes()
    pre = Preprocess(height=8, width=8, channels=1, mean=(0.0,), std=(1.0,))
    from_pgm, from_png = load_sample(pgm, pre), load_sample(_png(Image.fromarray(pixels)), pre)
    np.testing.assert_array_equal(from_pgm, from_png)
    assert from_pgm.max() <= 1.0


def test_grayscale_model_gets_one_channel_and_nhwc_layout() -> None:
    pre = Preprocess(height=8, width=8, channels=1, layout=Layout.NHWC, mean=(0.0,), std=(1.0,))
    sample = load_sample(_png(Image.new("RGB", (10, 10), (255, 255, 255))), pre)
    assert sample.shape == (8, 8, 1) and sample.max() == pytest.approx(255.0)


def test_normalisation_and_bgr() -> None:
    pre = Preprocess(
        height=4, width=4, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), bgr=True, resize=ResizeMode.squash
    )
    sample = load_sample(_png(Image.new("RGB", (4, 4), (100, 150, 200))), pre)
    # BGR: channel 0 holds blue (200), normalised with the first mean/std
    assert sample[:, 0, 0].tolist() == pytest.approx([(200 - 10) / 2, (150 - 20) / 4, (100 - 30) / 5])


def test_crop_takes_the_centre_after_scaling_the_short_side() -> None:
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 80:120] = 255  # a bright band in the middle
    pre = Preprocess(height=7, width=7, mean=(0.0,) * 3, std=(1.0,) * 3, resize=ResizeMode.crop)
    sample = load_sample(_png(Image.fromarray(pixels)), pre)
    assert sample[0, 3, 3] > 200 and sample[0, 3, 0] < 50


def test_letterbox_keeps_aspect_and_pads_bottom_right_with_114() -> None:
    pre = Preprocess(height=8, width=8, mean=(0.0,) * 3, std=(1.0,) * 3, resize=ResizeMode.letterbox)
    sample = load_sample(_png(Image.new("RGB", (16, 8), (0, 0, 0))), pre)
    assert sample[0, :4].max() == 0.0 and np.all(sample[0, 4:] == 114.0)


def test_a_centred_letterbox_pads_both_sides_as_ultralytics_does() -> None:
    """Ultralytics' YOLOv5/v8/11 centre the image in its letterbox; YOLOX puts it at the top-left."""
    pre = Preprocess(height=8, width=8, mean=(0.0,) * 3, std=(1.0,) * 3, resize=ResizeMode.letterbox_center)
    sample = load_sample(_png(Image.new("RGB", (16, 8), (0, 0, 0))), pre)  # 8x4 image rows 2-5
    assert np.all(sample[:, :2] == 114.0) and np.all(sample[:, 6:] == 114.0) and sample[:, 2:6].max() == 0.0
    tall = load_sample(_png(Image.new("RGB", (4, 8), (0, 0, 0))), pre)  # 4x8 image in columns 2-5
    cols = tall.transpose(0, 2, 1)
    assert np.all(cols[:, :2] == 114.0) and np.all(cols[:, 6:] == 114.0) and cols[:, 2:6].max() == 0.0


def test_the_letterbox_pads_with_the_value_asked_for_and_records_it() -> None:
    """rapid-table and LORE pad with black (cv2's default): at 114 their heat maps measured 4-6 dB better
    than with the padding they are fed. Old tables, which record no pad, read as 114."""
    from quantkit.config import PreprocessOptions
    from quantkit.errors import ConfigError

    pre = Preprocess(height=8, width=8, mean=(0.0,) * 3, std=(1.0,) * 3, resize=ResizeMode.letterbox, pad=0)
    sample = load_sample(_png(Image.new("RGB", (16, 8), (200, 200, 200))), pre)
    assert np.all(sample[:, :4] == 200.0) and np.all(sample[:, 4:] == 0.0)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    old = {k: v for k, v in pre.to_dict().items() if k != "pad"}
    assert Preprocess.from_dict(old).pad == 114.0
    for bad in (-1.0, 256.0, 114.5, 0.5):  # hq129 F13: 114.5 recorded as given, fed as 114
        with pytest.raises(ConfigError, match="--pad takes a whole pixel value from 0 to 255"):
            PreprocessOptions(pad=bad)
    with pytest.raises(ConfigError, match="--pad takes one number; got nan"):  # as every number option
        PreprocessOptions(pad=float("nan"))
    with pytest.raises(ConfigError, match="--pad fills a letterbox's border; --resize squash has none"):
        PreprocessOptions(pad=0, resize="squash")  # hunt48 C2: read by nothing
    assert PreprocessOptions(pad=0, resize="letterbox-center").pad == 0.0


def test_undecodable_and_bomb_images_raise_image_error() -> None:
    pre = PRE
    with pytest.raises(ImageError, match="not a decodable image"):
        load_sample(b"\x89PNG\r\n\x1a\n garbage", pre)
    with pytest.raises(ImageError, match="not a decodable image"):
        load_sample(b"", pre)
    full = _png(Image.new("RGB", (64, 64)))
    with pytest.raises(ImageError):
        load_sample(full[: len(full) // 2], pre)
    # hq129 F12: a phone's HEIC saved as .jpg, and an EPS (which Pillow would hand to Ghostscript)
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(
        ImageError, match=r"\(HEIF / HEIC: no Pillow plugin for it here\) by its content; conv"
    ):
        load_sample(heic, pre)
    with pytest.raises(ImageError, match=r"\(PostScript, EPS\) by its content; convert it to JPEG or PNG"):
        load_sample(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", pre)


# hq68 2: a 24x18 TIFF whose strip-offsets tag has the wrong type (found by mutating bytes); Pillow's TIFF
# plugin raises TypeError from its load and warns 'Tag data larger than file'
DAMAGED_TIFF = (
    "SUkqAMgBAAAXUVBNi15dXV9ZZ2doamNqbmZoZmBhX1pJF1RRS0tiaF5jV2Vsamtmd25idXBs6XBxb/9VFVNQVG5nY2Bbb21pbXhpXXts"
    "bW5tbGsXVFdWVlpfdGZkXmhubHJyaFtyZWtub29s/lkSWGNea3JlZGJscXNralt+Z2Zobv9wF1phYFpgcVx2ampianN0aGleg25pZmRp"
    "bxdVWWlhXXNsYnt0fHhwb2RiYn5jYWdoaWsXaldba2RteGxpamVveIGDeHZlYm5wbWhpFWZuYFpqdGlUS2yFm623vMbCn35pZGP/axdr"
    "bXBaWVtigayzsLvFztXh4sHLqGtdaWVeWBVnfH+JrM7Gv8fHzdjp7+/B6c2CZ15vF1R/////qcWop5Sevc7Q4eTTrJBnZWVOWRdTVmSG"
    "k553bhFaVJipknNle6djXV1jVFMXSk5aholkUl5jW1tialxUUF97WFJPS0MiDkZKT1tPSU5OT1FRVVRWVf1WBFNRUDo1F0hHP0BFTFFQ"
    "UE9VWVNZXFtZWFRTUz9SWhc+P0FGSU1QUE5PVVZYXFdUVVdWVEJRWGUXRUdJSUpNT09QT05TVVlQT1ZUU0NNW2xrCQAAAQMAAQAAABgA"
    "AAABAQMAAQAAABIAAAACAQMAAQAAAAgAAAADAQMAAXgAAAWAAAAGAQMAAQAAAAEAAAARAQcAAQAAAAgAAAAWAQMAAQAAABIAAAAXAQQA"
    "AQAAANwBAAAcAQMAAQAAAAEAAAAAAAAA"
)


def test_whatever_a_decoder_raises_on_a_damaged_file_is_that_files_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq68 2: a damaged TIFF stopped calibrate and compare as 'internal error (TypeError ...)', its
    UserWarning printed, where any other broken file is skipped and named."""
    import base64
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning leaking out of the decode fails the test
        with pytest.raises(ImageError, match=r"^not a decodable image \("):
            load_sample(base64.b64decode(DAMAGED_TIFF), PRE)

    small = _png(Image.new("RGB", (8, 8)))

    def failing_load(self: Image.Image) -> None:  # as Pillow's AVIF plugin fails on a flipped byte
        raise RuntimeError("Failed to decode frame 0: Decoding of color planes failed")

    monkeypatch.setattr(Image.Image, "load", failing_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", failing_load)
    with pytest.raises(ImageError, match=r"^not a decodable image \(Failed to decode frame 0"):
        load_sample(small, PRE)

    def out_of_memory(self: Image.Image) -> None:
        raise MemoryError

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", out_of_memory)
    with pytest.raises(MemoryError):  # not the file's fault: not skipped as unreadable
        load_sample(small, PRE)


def test_loader_skips_bad_files_and_hashes_content(image_dir: Path, tmp_path: Path) -> None:
    paths = find_images(image_dir)[:5]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    loader = ImageLoader([*paths, bad], PRE, 4)
    batches = list(loader)
    assert [b.data.shape[0] for b in batches] == [4, 1]
    assert [p for p, _ in loader.skipped] == [bad]
    again = ImageLoader(paths, PRE, 2)
    list(again)
    assert again.content_hash == loader.content_hash


def test_an_image_turned_into_a_pipe_after_listing_is_skipped_not_waited_on(
    image_dir: Path, tmp_path: Path
) -> None:
    """hq122 F4: an image replaced by a named pipe after the folder was listed kept calibrate waiting for
    a writer forever (open() of a FIFO blocks)."""
    import os
    import threading

    paths = find_images(image_dir)[:3]
    pipe = tmp_path / "late.jpg"
    os.mkfifo(pipe)
    loader = ImageLoader([*paths, pipe], PRE, 4)
    reading = threading.Thread(target=lambda: list(loader), daemon=True)
    reading.start()
    reading.join(timeout=60)
    assert not reading.is_alive()
    assert loader.skipped == [(pipe, "not a regular file (a pipe, a socket or a device)")]


def test_resolve_reads_layout_channels_and_size_from_the_model() -> None:
    options = PreprocessOptions(preset=Preset.unit)
    pre = resolve_preprocess(options, InputSpec("x", (None, 224, 224, 3)))
    assert (pre.layout, pre.channels, pre.height, pre.width) == (Layout.NHWC, 3, 224, 224)
    assert pre.std == (255.0, 255.0, 255.0)
    gray = resolve_preprocess(PreprocessOptions(), InputSpec("x", (None, 1, 28, 28)))
    assert gray.channels == 1 and len(gray.mean) == 1  # the preset's three values, averaged
    # three different values given for a grey model were averaged silently (--std 1,2,4 read as 2.33)
    with pytest.raises(ConfigError, match="--std has 3 different values but the model takes 1 channel"):
        resolve_preprocess(PreprocessOptions(std=(1.0, 2.0, 4.0)), InputSpec("x", (None, 1, 28, 28)))
    same = resolve_preprocess(PreprocessOptions(mean=(127.5,) * 3), InputSpec("x", (None, 1, 28, 28)))
    assert same.mean == (127.5,)


def test_resolve_errors() -> None:
    with pytest.raises(ConfigError, match="--input-size"):
        resolve_preprocess(PreprocessOptions(), InputSpec("x", (None, 3, None, None)))
    with pytest.raises(ConfigError, match="does not match"):
        resolve_preprocess(PreprocessOptions(input_size=(10, 10)), InputSpec("x", (1, 3, 8, 8)))
    with pytest.raises(ConfigError, match="no channel dimension"):
        resolve_preprocess(PreprocessOptions(), InputSpec("x", (1, 5, 8, 8)))
    with pytest.raises(ConfigError, match="4-D"):
        resolve_preprocess(PreprocessOptions(), InputSpec("x", (1, 8)))
    with pytest.raises(ConfigError, match="--mean"):
        resolve_preprocess(PreprocessOptions(mean=(1.0, 2.0)), InputSpec("x", (1, 3, 8, 8)))


def test_a_float_image_of_values_in_0_1_is_scaled_to_pixels() -> None:
    """hunt33: a float TIFF (mode F, 0..1) was read as pixel values 0..1, a black image."""
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    raw = io.BytesIO()
    Image.fromarray(values, "F").save(raw, "TIFF")
    pre = Preprocess(height=8, width=8, channels=1, mean=(0.0,), std=(1.0,), resize=ResizeMode.squash)
    sample = load_sample(raw.getvalue(), pre)
    assert sample.max() == pytest.approx(255.0) and sample.min() == pytest.approx(0.0)
    # hunt39 F12: one pixel at 1.0005 (resampling overshoot) made it read as 0..255, a black image
    big = np.random.default_rng(4).random((64, 64)).astype(np.float32)
    over = big.copy()
    over[0, 0] = 1.0005
    pre = dataclasses.replace(pre, height=64, width=64)
    samples = []
    for values in (big, over):
        raw = io.BytesIO()
        Image.fromarray(values, "F").save(raw, "TIFF")
        samples.append(load_sample(raw.getvalue(), pre))
    assert samples[1].mean() == pytest.approx(samples[0].mean(), abs=0.1) and samples[1].mean() > 100


def test_an_image_with_pixels_that_are_not_finite_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """hq61: float TIFFs in [0, 1] with one NaN pixel each calibrated with exit 0 (numpy's cast warnings
    on stderr): the NaN made the range judged NaN, every image fed black. Such an image is skipped and
    named, as an undecodable one is; the others are read."""
    from quantkit.pixels import peak_16_bit

    good = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    for name, bad in (("nan.tif", np.nan), ("inf.tif", np.inf), ("good.tif", None)):
        values = good.copy()
        if bad is not None:
            values[0, 0] = bad
        Image.fromarray(values, "F").save(tmp_path / name)
    pre = Preprocess(height=8, width=8, channels=1, mean=(0.0,), std=(1.0,), resize=ResizeMode.squash)
    with pytest.raises(ImageError, match=r"^some of its pixels are not finite \(NaN or inf\); fill them"):
        load_sample((tmp_path / "nan.tif").read_bytes(), pre)
    loader = ImageLoader(sorted(tmp_path.glob("*.tif")), pre, batch_size=4)
    batches = list(loader)
    assert [p.name for b in batches for p in b.paths] == ["good.tif"]
    assert [p.name for p, _ in loader.skipped] == ["inf.tif", "nan.tif"]
    assert float(batches[0].data.max()) > 200.0  # read as 0..1, not black
    assert peak_16_bit(tmp_path / "nan.tif") is None


def test_a_strip_image_is_cropped_without_scaling_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """hunt39 F1: a 1x30000 PNG (90 KB) was scaled to 256x7,680,000 pixels before the centre crop: 8.1 GB
    and 49 s for one image. Only the window kept is resampled now, to the same pixels."""
    from quantkit import images

    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recorded(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        sizes.append(size)
        return resize(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recorded)
    pre = Preprocess(height=224, width=224)
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 30000, 3), dtype=np.uint8))
    assert images._resize(strip, pre).size == (224, 224)
    assert max(w * h for w, h in sizes) == 224 * 224
    # a strip just past the bound: the pixels the whole-image path gives
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 5000, 3), dtype=np.uint8))
    monkeypatch.setattr(images, "STRIP_AREA", 10**9)
    whole = np.asarray(images._resize(wide, pre))
    monkeypatch.setattr(images, "STRIP_AREA", 64)
    np.testing.assert_array_equal(np.asarray(images._resize(wide, pre)), whole)


def test_jfif_and_netpbm_files_are_images(tmp_path: Path) -> None:
    """hunt39 F3: a .jfif (a JPEG as Windows and browsers save it) and a .ppm were skipped without a word
    in a folder that held other images."""
    pixels = np.random.default_rng(2).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jfif", format="JPEG")
    Image.fromarray(pixels).save(tmp_path / "b.ppm")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "c.pgm")
    Image.fromarray(pixels).save(tmp_path / "d.png")
    assert [p.name for p in find_images(tmp_path)] == ["a.jfif", "b.ppm", "c.pgm", "d.png"]
    pre = Preprocess(height=16, width=16, mean=(0.0,), std=(1.0,), resize=ResizeMode.squash)
    assert all(load_sample(p.read_bytes(), pre).shape == (3, 16, 16) for p in find_images(tmp_path))


def test_a_link_to_a_listed_image_is_read_once_and_copies_are_said(tmp_path: Path) -> None:
    """hunt39 F4: a link inside the folder to an image in it, and a byte-identical copy, each counted as
    another image (one photo weighed three times), and the table's 'unique' counted paths."""
    import json

    from quantkit import pipeline
    from quantkit.config import CalibrateConfig
    from tests.conftest import tiny_cnn

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "d.png"):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / name)
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes())  # a copy
    (folder / "c.png").symlink_to(folder / "a.png")  # a link to a listed image
    assert [p.name for p in find_images(folder)] == ["a.png", "b.png", "d.png"]
    model, table = tiny_cnn(tmp_path / "m.onnx"), tmp_path / "m.calib.json"
    summary = pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(folder)))
    assert summary.images_used == 3
    assert json.loads(table.read_text())["meta"]["images"]["unique"] == 2
    assert any(
        w.startswith("1 of the 3 images used hold the same bytes as another one") for w in summary.warnings
    )


def test_a_folder_of_hidden_files_only_is_named_so(tmp_path: Path) -> None:
    """hunt39 F10: a folder whose only images were macOS's ._* files or under __MACOSX/ was refused as
    'links to files outside it', and the advice to copy the images in could not help."""
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "a.jpg").write_bytes(b"x")
    (tmp_path / "._b.jpg").write_bytes(b"x")
    with pytest.raises(ImageError, match=r"the only files under .* are hidden, macOS metadata or a NAS"):
        find_images(tmp_path)


def _png_16_bit_rgb(path: Path, values: np.ndarray) -> None:
    """A 48-bit PNG (16 bits a channel: Pillow writes none), values uint16 [H, W, 3]."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = values.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_a_16_bit_colour_image_of_narrow_data_is_found(tmp_path: Path) -> None:
    """hq61: 48-bit PNGs holding 12-bit data (camera, medical) arrive at 0-15 of 255, as Pillow keeps each
    value's high byte, and calibrate's warning on narrow 16-bit data (grey images only) said nothing."""
    from quantkit.evaluate.sanity import narrow_16_bit
    from quantkit.pixels import peak_16_bit

    values = np.random.default_rng(0).integers(0, 4096, (12, 10, 3)).astype(np.uint16)
    _png_16_bit_rgb(tmp_path / "narrow.png", values)
    _png_16_bit_rgb(tmp_path / "full.png", values * 16)
    Image.fromarray((values >> 4).astype(np.uint8)).save(tmp_path / "eight.png")
    pre = Preprocess(height=12, width=10, mean=(0.0,) * 3, std=(1.0,) * 3, resize=ResizeMode.squash)
    assert load_sample((tmp_path / "narrow.png").read_bytes(), pre).max() <= 15.0  # high bytes: nearly black
    assert peak_16_bit(tmp_path / "narrow.png") == (4095.0, 4095.0)
    assert peak_16_bit(tmp_path / "full.png") == (65535.0, 65535.0)
    assert peak_16_bit(tmp_path / "eight.png") is None
    line = narrow_16_bit([4095.0], 1, [4095.0])
    assert line is not None and line.startswith("the images are 16-bit with values up to 4095 (12-bit data)")


def _tiff(array: np.ndarray, sample_format: int, photometric: int = 1, damaged: bool = False) -> bytes:
    """A one-strip little-endian grey TIFF of `array` [H, W] as written, whatever Pillow writes; damaged:
    with an Orientation tag of two values (Pillow warns, then reads it)."""
    import struct

    height, width = array.shape
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, array.dtype.itemsize * 8), (259, 3, 1, 1)]
    tags += [(262, 3, 1, photometric), (273, 4, 1, 0), (274, 3, 2 if damaged else 1, 1), (277, 3, 1, 1)]
    tags += [(278, 3, 1, height), (279, 4, 1, len(data)), (339, 3, 1, sample_format)]
    start = 8 + 2 + len(tags) * 12 + 4
    out = bytearray(b"II*\0" + struct.pack("<IH", 8, len(tags)))
    for tag, kind, count, value in tags:
        value = start if tag == 273 else value
        packed = struct.pack("<HH", value, count - 1) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return bytes(out + struct.pack("<I", 0) + data)


def test_tiff_values_are_read_as_they_mean_or_left_out_with_the_reason() -> None:
    """hq89 F2: a 16-bit MinIsWhite TIFF was not inverted (an 8-bit one is); int16 negatives, a float in
    [-1, 1] and a uint32 past 2^31 (Pillow's int32) were fed as black, the last inverted; F8: a LAB TIFF
    was 'not decodable' for a one-channel model."""
    grey = Preprocess(height=4, width=4, channels=1, mean=(0.0,), std=(1.0,), resize=ResizeMode.squash)
    white = _tiff(np.full((4, 4), 40000, np.uint16), 1, photometric=0)
    assert load_sample(white, grey).mean() == pytest.approx(255 - 40000 / 65535 * 255, abs=0.6)
    eight = _tiff(np.full((4, 4), 100, np.uint8), 1, photometric=0)
    assert load_sample(eight, grey).mean() == pytest.approx(155.0)
    wide = np.array([[4_000_000_000] * 4, [1_000_000_000] * 4] * 2, np.uint32)  # 4.0e9 read as 0, 1.0e9
    assert load_sample(_tiff(wide, 1), grey)[0, :, 0].tolist() == [237.0, 59.0] * 2  # as 237 (hq89 F2)
    for array, form in (
        (np.array([[20000] * 4, [-20000] * 4] * 2, np.int16), 2),
        (np.array([[0.5] * 4, [-0.5] * 4] * 2, np.float32), 3),
    ):
        with pytest.raises(ImageError, match=r"^it holds negative pixel values \(down to -"):
            load_sample(_tiff(array, form), grey)
    noise = np.array([[0.5] * 4, [-0.001] * 4] * 2, np.float32)  # noise around 0: clipped, read
    assert load_sample(_tiff(noise, 3), grey).min() == 0.0
    # hq91 F6: a black level at -0.005 and a stray pixel at -0.02 were refused as signed data; F9: noise past
    # 1.0 in a [0, 1] photo read it over 0-255, black
    rng = np.random.default_rng(0)
    photo = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32) + rng.normal(0, 0.01, (32, 32))
    photo[0, 0] = -0.02
    fed = load_sample(_tiff(photo.astype(np.float32), 3), dataclasses.replace(grey, height=32, width=32))
    assert 120 < fed.mean() < 130
    counts = np.full((4, 4), 4000, np.int32)
    counts[0, 0] = -300  # one stray pixel in 0-4000 data: clipped, read
    assert load_sample(_tiff(counts, 2), grey).min() == 0.0
    bright = np.full((64, 64), 1000, np.uint32)  # hq92 F3: pixels past 2^31 (Pillow reads uint32 as int32)
    bright[0, :2] = 2**32 - 1  # were fed as black; hq94 F3: a fill value of 2^32 - 1 refused the image
    fed = load_sample(
        _tiff(bright, 1), dataclasses.replace(grey, height=64, width=64, resize=ResizeMode.squash)
    )
    assert fed[0, 0, 0] == 255.0 and fed[0, 5, 5] == pytest.approx(1000 / 65535 * 255, abs=0.6)
    for level in (1.3, 1.9):  # hq94 F1: a [0, 1] frame with highlights to 1.4 was read over 0-255, black
        assert load_sample(_tiff(np.full((4, 4), level, np.float32), 3), grey).min() == 255.0
    buffer = io.BytesIO()
    Image.new("LAB", (4, 4), (50, 0, 0)).save(buffer, format="TIFF")
    assert load_sample(buffer.getvalue(), grey).shape == (1, 4, 4)


def test_icons_and_old_bitmaps_are_counted_where_left_out(image_dir: Path, tmp_path: Path) -> None:
    """hq89 F4: .ico, .tga and .pcx files (Pillow reads them, quantkit does not) went without a word."""
    folder = tmp_path / "set"
    folder.mkdir()
    photo = Image.open(sorted(image_dir.rglob("*.png"))[0]).convert("RGB")
    photo.save(folder / "own.png")
    for suffix in (".ico", ".tga", ".pcx"):
        photo.save(folder / f"icon{suffix}")
    assert [p.name for p in find_images(folder)] == ["own.png"]
    assert left_out(folder) == LeftOut(unread=3, formats=(".ico", ".pcx", ".tga"))


def test_a_damaged_tag_says_nothing_when_its_peak_is_read(tmp_path: Path) -> None:
    """hq89 F6: peak_16_bit opened the file outside the warning filter: Pillow's UserWarning on a damaged
    TIFF tag reached the terminal under -q, and an internal error under `python -W error`."""
    import warnings

    from quantkit.pixels import peak_16_bit

    path = tmp_path / "damaged.tif"
    path.write_bytes(_tiff(np.full((4, 4), 4095, np.uint16), 1, damaged=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert peak_16_bit(path) == (4095.0, 4095.0)


def test_image_files_without_an_image_suffix_are_counted_where_they_are_left_out(tmp_path: Path) -> None:
    """hq169: 8 JPEGs named img1..img8 beside 5 .JPG were left out without a word (calibrated on 5). They
    are still left out (a name says a format), but counted by their first bytes, with an example."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "kept.jpg")
    for k in (2, 1):
        Image.new("RGB", (8, 8)).save(folder / f"img{k}", format="JPEG")
    Image.new("RGB", (8, 8)).save(folder / "scan.data", format="PNG")
    (folder / "notes.txt").write_text("GIF is not this file's format")
    (folder / "blob").write_bytes(b"\x00" * 32)
    assert [p.name for p in find_images(folder)] == ["kept.jpg"]
    assert left_out(folder) == LeftOut(misnamed=3, misnamed_example="img1")
    assert shortfall(ImageSelection(folder), find_images(folder)) == (
        f"{folder}: 3 image file(s) without an image suffix left out (e.g. img1): name them with their "
        "format's (.jpg, .png)"
    )


def test_an_input_symbolic_on_every_axis_takes_the_channels_of_the_conv_reading_it(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq172 F7: torch's dynamic_axes on every axis declares the image input [N, C, H, W], refused as 'no
    channel dimension of 1 or 3' though the Conv reading it takes 3 channels (its weight [8, 3, 3, 3])."""
    import onnx

    from tests.conftest import tiny_cnn
    from tests.helpers import run

    model = onnx.load(str(tiny_cnn(tmp_path / "cnn.onnx")))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("N", "C", "H", "W"), strict=True):
        dim.dim_param = name
    path = tmp_path / "allsym.onnx"
    onnx.save(model, str(path))
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    code, _, err = run(
        ["calibrate", str(path), "--images", str(image_dir), "--input-size", "16x16", "-o", str(table)],
        capsys,
    )
    assert code == 0, err
    assert run(["convert", str(path), "-c", str(table), "-o", str(out)], capsys)[0] == 0
    argv = [
        "compare",
        str(path),
        str(out),
        "--images",
        str(image_dir),
        "--input-size",
        "16x16",
        "--runs",
        "0",
    ]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    # hq173 F7: through a normalisation by a constant, or an NHWC export's Transpose; [N, C, 16, 16] too
    from onnx import helper, numpy_helper

    first = next(n for n in model.graph.node if n.op_type == "Conv")
    for case in ("sub", "nhwc", "fixed"):
        variant = onnx.ModelProto()
        variant.CopyFrom(model)
        conv = next(n for n in variant.graph.node if n.name == first.name)
        dims = variant.graph.input[0].type.tensor_type.shape.dim
        if case == "sub":
            variant.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "mean"))
            variant.graph.node.insert(0, helper.make_node("Sub", ["x", "mean"], ["xs"], name="norm"))
            conv.input[0] = "xs"
        elif case == "nhwc":
            variant.graph.node.insert(0, helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
            conv.input[0] = "xt"
        else:
            dims[2].dim_value, dims[3].dim_value = 16, 16
        path = tmp_path / f"{case}.onnx"
        onnx.save(variant, str(path))
        sized = [] if case == "fixed" else ["--input-size", "16x16"]
        argv = ["calibrate", str(path), "--images", str(image_dir), *sized, "-o", str(tmp_path / "v.json")]
        code, out, err = run(argv, capsys)
        assert code == 0, (case, err)
        assert ("NHWC" if case == "nhwc" else "NCHW") in out + err, case
