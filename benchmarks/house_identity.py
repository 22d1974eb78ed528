"""Checksums of predict's outputs, to show that a refactor of the inference house changes no output byte.

Three runs of the bundled model over the sample scene (``sample_data/``, 1000 x 1000 px), each writing the
class, confidence and probability rasters with their side-cars and styles:

- ``scene``: one region, as ``geoseg predict`` runs it;
- ``regions``: four regions (one 512-px block per side: region sizes forced down as the tests do), with
  ``resume`` so that the regions are cut and assembled from parts;
- ``resumed``: the four-region run stopped (Ctrl-C from the progress callback) after half of its tiles, then
  run again with ``resume``: the second run computes only the missing regions.

It prints one ``sha256  run/file`` line per output; run it on two checkouts and compare (``diff``):

    PYTHONPATH=/work/main python benchmarks/house_identity.py > before.txt
    PYTHONPATH=. python benchmarks/house_identity.py > after.txt && diff before.txt after.txt

``--tile 256`` (default) keeps it near a minute on two CPU cores; outputs depend on it, so compare like with
like.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENE = REPO / "sample_data" / "netherlands_0p25m_epsg28992.tif"


class _Stop:
    """A progress callback that presses Ctrl-C once half of the tiles are done."""

    def __call__(self, done: int, total: int) -> None:
        if done >= total / 2:
            raise KeyboardInterrupt


def _run(output: Path, tile: int, engine: str, **options) -> None:
    from geoseg.api import predict

    predict(
        [str(SCENE)],
        str(output),
        tile=tile,
        overlap=tile // 4,
        batch_size=4,
        device="cpu",
        precision="fp32",
        engine=engine,
        confidence=True,
        probabilities=True,
        **options,
    )


def _digests(folder: Path, run: str) -> list[str]:
    return [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {run}/{path.relative_to(folder)}"
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--engine", default="torch", help="torch (default) or onnxruntime")
    args = parser.parse_args()
    import geoseg.inference.plan as planning

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "scene").mkdir()
        _run(root / "scene" / "out.tif", args.tile, args.engine)
        lines += _digests(root / "scene", "scene")

        planning.MIN_REGION_TILES = 1  # regions of one 512-px block per side: four over the scene
        planning.RESUME_REGION_PIXELS = 512 * 512
        (root / "regions").mkdir()
        _run(root / "regions" / "out.tif", args.tile, args.engine, resume=True)
        lines += _digests(root / "regions", "regions")

        (root / "resumed").mkdir()
        try:
            _run(root / "resumed" / "out.tif", args.tile, args.engine, resume=True, progress=_Stop())
        except KeyboardInterrupt:
            pass
        else:
            raise SystemExit("the first resumed run was not stopped")
        parts = sorted(p.name for p in (root / "resumed").glob(".*geoseg-work/region-*.json"))
        _run(root / "resumed" / "out.tif", args.tile, args.engine, resume=True)
        lines += _digests(root / "resumed", "resumed")
        lines.append(f"# regions finished before the stop: {len(parts)} of 4")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
