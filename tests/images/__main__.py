"""``python -m images pause|engine-pipeline OUT_DIR ...``: write image archives.

- ``pause BINARY OUT_DIR``: the node's sandbox image from the static pause binary.
- ``probe BINARY OUT_DIR``: a tiny static program for the node's own tests (``probe.c``).
- ``engine-pipeline BINARY LIBS_FILE OUT_DIR``: the engine pipeline's two images from its
  glibc-dynamic binary and the file listing the shared libraries and loader it needs (one
  absolute path a line): the default one, and one whose command is ``--ignore-sigterm``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from images.oci import ImageSpec, archive_name, write_archive

PAUSE_IMAGE = "localhost/sluice/pause:0.1.0"
PROBE_IMAGE = "localhost/sluice/probe:0.1.0"
ENGINE_PIPELINE_IMAGE = "localhost/sluice/engine-pipeline:0.1.0"
ENGINE_PIPELINE_IGNORES_SIGTERM_IMAGE = f"{ENGINE_PIPELINE_IMAGE}-ignores-sigterm"
ENGINE_PIPELINE_BINARY = "/usr/local/bin/engine-pipeline"  # pipeline.report.BINARY
# Where a pipeline's claim is mounted (Sluice's pods mount the volume there).
STORAGE = PurePosixPath("/storage")


def pause_image(binary: Path) -> ImageSpec:
    return ImageSpec(
        name=PAUSE_IMAGE,
        files={binary: PurePosixPath("/pause")},
        entrypoint=["/pause"],
    )


def probe_image(binary: Path) -> ImageSpec:
    return ImageSpec(
        name=PROBE_IMAGE, files={binary: PurePosixPath("/probe")}, entrypoint=["/probe"]
    )


def engine_pipeline_images(binary: Path, libs_file: Path) -> list[ImageSpec]:
    """The binary at /usr/local/bin/engine-pipeline (where `pipeline.report` runs it) plus
    each library at its own path (the loader and
    the RPATH-free binary find them where the build machine has them)."""
    files: dict[Path, PurePosixPath] = {binary: PurePosixPath(ENGINE_PIPELINE_BINARY)}
    for line in libs_file.read_text().splitlines():
        if line.strip():
            path = PurePosixPath(line.strip())
            if not path.is_absolute():
                raise SystemExit(f"{libs_file}: {line!r} is not an absolute path")
            files[Path(path)] = path
    common = {
        "files": files,
        "entrypoint": [ENGINE_PIPELINE_BINARY],
        "dirs": [STORAGE],
        "env": {"PATH": "/usr/local/bin:/", "STORAGE_DIR": str(STORAGE)},
    }
    return [
        ImageSpec(name=ENGINE_PIPELINE_IMAGE, **common),  # type: ignore[arg-type]
        ImageSpec(
            name=ENGINE_PIPELINE_IGNORES_SIGTERM_IMAGE,
            cmd=["--ignore-sigterm"],
            **common,  # type: ignore[arg-type]
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    sub = parser.add_subparsers(dest="image", required=True)
    pause = sub.add_parser("pause")
    pause.add_argument("binary", type=Path)
    pause.add_argument("out_dir", type=Path)
    probe = sub.add_parser("probe")
    probe.add_argument("binary", type=Path)
    probe.add_argument("out_dir", type=Path)
    engine = sub.add_parser("engine-pipeline")
    engine.add_argument("binary", type=Path)
    engine.add_argument("libs_file", type=Path)
    engine.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.image == "pause":
        specs = [pause_image(args.binary)]
    elif args.image == "probe":
        specs = [probe_image(args.binary)]
    else:
        specs = engine_pipeline_images(args.binary, args.libs_file)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        path = write_archive(spec, args.out_dir / archive_name(spec.name))
        print(f"{spec.name}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
