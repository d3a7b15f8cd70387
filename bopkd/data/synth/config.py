"""Settings of a synthetic dataset (:class:`SynthConfig`), from a dict, a YAML file or ``bopkd synth`` options."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from bopkd.config import from_dict, to_dict
from bopkd.data.gt_info import VISIB_DELTA
from bopkd.data.synth.camera import CAMERAS
from bopkd.errors import BopkdError


@dataclass
class SynthConfig:
    """Settings of a synthetic dataset (``bopkd synth``). Built from a dict by :func:`synth_config_from_dict`.

    Attributes:
        name: dataset name, the folder under ``root``.
        root: folder that holds the datasets.
        models: ``"procedural"`` (bopkd's objects 1-8) or the path of a BOP ``models/`` folder with
            ``models_info.json`` (its ``models_eval`` sibling, if any, becomes ``models_eval/``).
        objects: object ids to use (default: all).
        train: number of ``train_pbr`` images.
        test: number of ``test`` images.
        width, height: image size in px (0: the camera's own size).
        camera: registered dataset whose camera to use (lm, lmo, ycbv, tless), a dataset folder under
            ``root``, or a ``camera.json`` path; K is scaled when the image size differs.
        viewpoints: ``"linemod"`` (upper hemisphere, small in-plane rotation: an easy setting) or
            ``"free"`` (any rotation).
        objects_per_image: inclusive range of the number of distinct objects per image.
        depth_range: object distance range in mm at LM-O's focal length per image width (default: by
            viewpoint mode), scaled to the camera.
        max_elevation_deg: largest camera elevation above the table in ``linemod`` mode.
        inplane_deg: largest in-plane rotation of the camera in ``linemod`` mode.
        table_radius: radius (mm) of the table area objects are placed on in ``linemod`` mode.
        seed: random seed; same seed, same files.
        images_per_scene: images per scene folder (BOP's PBR scenes hold 1000).
        train_rgb_ext, test_rgb_ext: ``"jpg"`` or ``"png"`` (BOP: jpg for PBR, png for test).
        jpeg_quality: JPEG quality, 0-100.
        png_compression: zlib level of PNG files, 0-9 (1: fast).
        train_depth_scale, test_depth_scale: mm per stored depth unit (BOP PBR: 0.1, LM test: 1.0).
        visib_delta: visibility tolerance in mm of the GT info (BOP: 15).
        min_visib_fract: smallest ``visib_fract`` of a BOP'19 test target.
        edge_length: longest edge (mm) of the procedural meshes.
    """

    name: str = "demo"
    root: str = "bop_data"
    models: str = "procedural"
    objects: tuple[int, ...] | None = None
    train: int = 200
    test: int = 40
    width: int = 0
    height: int = 0
    camera: str = "lmo"
    viewpoints: str = "linemod"
    objects_per_image: tuple[int, int] = (3, 6)
    depth_range: tuple[float, float] | None = None
    max_elevation_deg: float = 80.0
    inplane_deg: float = 15.0
    table_radius: float = 220.0
    seed: int = 0
    images_per_scene: int = 1000
    train_rgb_ext: str = "jpg"
    test_rgb_ext: str = "png"
    jpeg_quality: int = 95
    png_compression: int = 1
    train_depth_scale: float = 0.1
    test_depth_scale: float = 1.0
    visib_delta: float = VISIB_DELTA
    min_visib_fract: float = 0.1
    edge_length: float = 6.0

    def __post_init__(self) -> None:
        if self.objects is not None:
            self.objects = tuple(int(i) for i in self.objects)
        self.objects_per_image = tuple(int(v) for v in self.objects_per_image)
        if self.depth_range is not None:
            self.depth_range = tuple(float(v) for v in self.depth_range)
        self.root = str(self.root)
        self.models = str(self.models)
        # Paths count by what they point to, so a rerun from another folder finds the same settings.
        if self.models != "procedural" and Path(self.models).exists():
            self.models = str(Path(self.models).resolve())
        if self.camera not in CAMERAS and Path(self.camera).exists():
            self.camera = str(Path(self.camera).resolve())
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BopkdError` naming the first bad setting and what it should be."""

        def bad(msg: str) -> BopkdError:
            return BopkdError(f"synth config for {self.name!r}: {msg}")

        if not self.name or "/" in self.name or self.name.startswith("."):
            raise bad("name must be a plain folder name (no '/', not starting with '.')")
        if self.train < 0 or self.test < 0:
            raise bad("--train and --test must be >= 0")
        if self.width < 0 or self.height < 0 or (self.width == 0) != (self.height == 0):
            raise bad("--size must be WxH with both > 0 (or omitted for the camera's size)")
        if self.viewpoints not in ("linemod", "free"):
            raise bad(f"viewpoints {self.viewpoints!r} unknown; use linemod or free")
        lo, hi = self.objects_per_image if len(self.objects_per_image) == 2 else (0, -1)
        if not 1 <= lo <= hi:
            raise bad("objects_per_image must be (min, max) with 1 <= min <= max")
        if self.depth_range is not None and not (
            len(self.depth_range) == 2 and 0 < self.depth_range[0] <= self.depth_range[1]
        ):
            raise bad("depth_range must be (near, far) in mm with 0 < near <= far")
        if not 0 <= self.max_elevation_deg <= 89.0:
            raise bad("max_elevation_deg must be in [0, 89]")
        if self.images_per_scene < 1:
            raise bad("images_per_scene must be >= 1")
        for ext in (self.train_rgb_ext, self.test_rgb_ext):
            if ext not in ("jpg", "png"):
                raise bad(f"rgb extension {ext!r} unknown; use jpg or png")
        if not 0 <= self.png_compression <= 9 or not 0 <= self.jpeg_quality <= 100:
            raise bad("png_compression must be 0-9 and jpeg_quality 0-100")
        if self.train_depth_scale <= 0 or self.test_depth_scale <= 0:
            raise bad("depth scales must be > 0")
        if self.objects is not None and len(self.objects) == 0:
            raise bad("--objects is empty")

    def to_dict(self) -> dict:
        """Plain YAML/JSON form (tuples become lists)."""
        return to_dict(self)

    def identity(self) -> dict:
        """The settings that decide the files' content (all but where they go)."""
        d = self.to_dict()
        d.pop("root")
        d.pop("name")
        return d


def synth_config_from_dict(d: dict, source: str = "the synth settings") -> SynthConfig:
    """A :class:`SynthConfig` from a plain dict (e.g. loaded from YAML) by :func:`bopkd.config.from_dict`.

    Unknown keys are named together with the known ones; a wrong type names the key, the expected type
    and ``source``; range checks are :meth:`SynthConfig.validate`'s.
    """
    known = {f.name for f in fields(SynthConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BopkdError(
            f"synth config: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return from_dict(SynthConfig, d, source=source)


def synth_config_from_options(
    name: str,
    root: str | Path,
    config: str | Path | None = None,
    models: str | None = None,
    train: int | None = None,
    test: int | None = None,
    size: str | None = None,
    seed: int | None = None,
    camera: str | None = None,
    objects: str | None = None,
    viewpoints: str | None = None,
    per_image: str | None = None,
) -> SynthConfig:
    """A :class:`SynthConfig` from ``bopkd synth`` options (None: not given) over an optional YAML file."""
    d: dict = {}
    if config is not None:
        import yaml

        p = Path(config)
        if not p.is_file():
            raise BopkdError(f"{p}: no such config file; pass --config with an existing YAML file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise BopkdError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
        if not isinstance(loaded, dict):
            raise BopkdError(f"{p}: expected a mapping of SynthConfig settings")
        d.update(loaded)
    d["name"] = name
    d["root"] = str(root)
    given = {
        "models": models,
        "train": train,
        "test": test,
        "seed": seed,
        "camera": camera,
        "viewpoints": viewpoints,
    }
    d.update({k: v for k, v in given.items() if v is not None})
    if size is not None:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise BopkdError(f"--size {size!r}: expected WxH, e.g. 640x480") from None
        d["width"], d["height"] = w, h
    if objects is not None:
        try:
            d["objects"] = [int(v) for v in objects.replace(" ", "").split(",") if v]
        except ValueError:
            raise BopkdError(f"--objects {objects!r}: expected comma-separated ids, e.g. 1,2,5") from None
    if per_image is not None:
        try:
            parts = [int(v) for v in per_image.split("-")]
        except ValueError:
            raise BopkdError(f"--per-image {per_image!r}: expected MIN-MAX or N, e.g. 3-6") from None
        if len(parts) not in (1, 2):
            raise BopkdError(f"--per-image {per_image!r}: expected MIN-MAX or N, e.g. 3-6")
        d["objects_per_image"] = (parts[0], parts[-1])
    return synth_config_from_dict(d, source=str(config) if config is not None else "bopkd synth options")
