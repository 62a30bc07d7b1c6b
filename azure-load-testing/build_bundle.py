"""Build voiceload-bundle.zip: the harness package, scenarios and audio fixtures, layout kept.

Azure Load Testing flattens uploaded files into one folder, so everything with a path travels in
this zip artifact (listed under ``zipArtifacts``). ALT's documented limits are checked here:
under 50 MB, at most 1000 files, at most 1 GB uncompressed. The zip is deterministic (fixed
timestamps, sorted entries), so rebuilding an unchanged tree gives the same bytes.

Usage: python azure-load-testing/build_bundle.py [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "voiceload-bundle.zip"
MAX_ZIP_BYTES = 50 * 1024 * 1024
MAX_FILES = 1000
MAX_UNCOMPRESSED = 1024 ** 3
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis"}


class BundleError(RuntimeError):
    """A required file is missing or a documented ALT limit would be exceeded."""


def bundle_files(root: Path = ROOT) -> list[Path]:
    """Relative paths to pack: harness/ (code + package data), scenarios/, fixtures in the manifest."""
    files: set[Path] = set()
    for top, pattern in (("harness", "*"), ("scenarios", "*.yaml")):
        for p in (root / top).rglob(pattern):
            rel = p.relative_to(root)
            if p.is_file() and not _SKIP_PARTS.intersection(rel.parts) and p.suffix not in (".pyc", ".pyo"):
                files.add(rel)
    manifest = root / "audio_fixtures" / "manifest.yaml"
    if not manifest.is_file():
        raise BundleError(f"missing {manifest.relative_to(root)}")
    files.add(manifest.relative_to(root))
    data = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    for i, fx in enumerate(data.get("fixtures") or []):
        wav = root / "audio_fixtures" / str(fx.get("file", ""))
        if not wav.is_file():
            raise BundleError(f"audio_fixtures/manifest.yaml fixtures[{i}].file: {wav.name} does not exist")
        files.add(wav.relative_to(root))
    if Path("harness/locustfile.py") not in files:
        raise BundleError("harness/locustfile.py is missing")
    return sorted(files)


def build(out: Path = DEFAULT_OUT, root: Path = ROOT) -> list[str]:
    files = bundle_files(root)
    if len(files) > MAX_FILES:
        raise BundleError(f"{len(files)} files: Azure Load Testing allows at most {MAX_FILES} per zip artifact")
    total = sum((root / f).stat().st_size for f in files)
    if total > MAX_UNCOMPRESSED:
        raise BundleError(f"{total} bytes uncompressed: the limit is 1 GB")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            info = zipfile.ZipInfo(f.as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, (root / f).read_bytes())
    if tmp.stat().st_size >= MAX_ZIP_BYTES:
        tmp.unlink()
        raise BundleError("the zip would exceed 50 MB: Azure Load Testing refuses larger zip artifacts")
    tmp.replace(out)
    return [f.as_posix() for f in files]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"zip to write (default {DEFAULT_OUT.name})")
    args = ap.parse_args(argv)
    try:
        names = build(args.out)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(names)} files, {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
