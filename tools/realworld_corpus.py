"""Real-world point-cloud files: gather them, compare our readers with the formats' reference readers.

    python tools/realworld_corpus.py extract --out corpus       # files of PCL, PDAL, laspy (fetched mirrors)
    python tools/realworld_corpus.py generate --out corpus/tools  # files written by Open3D, laspy, plyfile, pypcd4
    python tools/realworld_corpus.py compare corpus --json corpus.json   # ours vs reference, file by file
    python tools/realworld_corpus.py commit corpus              # refresh tests/data/realworld/ + manifest.json

``extract`` reads the repositories from git mirrors (``--mirrors``, default ``../.mirror``: the search tool's
``fetch github:PointCloudLibrary/pcl`` etc. puts them there) at the commits in :data:`SOURCES`; nothing is
downloaded. ``compare`` runs each reference reader in a child process with a memory limit and a timeout (laspy
allocates what a header asks for; lazrs panics on some files) and prints one line per file: agree, differ,
ours refuses, reference refuses, both refuse. ``commit`` copies :data:`COMMITTED` (small files, permissive
licences, < 20 MB in all) into ``tests/data/realworld/`` with a manifest that ``tests/test_realworld.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "tests" / "data" / "realworld"

#: repository -> (commit, licence, what its files are)
SOURCES = {
    "PointCloudLibrary/pcl": ("1fdb03883eab28f642e938d9bf4d317903212cb4", "BSD-3-Clause",
                              "PCD written by PCL's PCDWriter (test clouds; binary_compressed pads after the block)"),
    "PDAL/PDAL": ("ccf0ab7046072f68cab78734e90d0d3149f3af10", "BSD-3-Clause",
                  "LAS 1.0-1.4 / LAZ (LASzip, lazperf) / COPC / PCD / PLY written by PDAL, LAStools, liblas"),
    "laspy/laspy": ("fbc5b375f9dad6bae499a81ca436bee361ecf047", "BSD-2-Clause",
                    "LAS/LAZ test data of laspy: EVLRs, extra bytes, waveform, COPC, LAS 1.1-1.4"),
}  # fmt: skip

#: committed subset: (repo, path, what it exercises, expectation); expectation "agree" or "refuse: why"
COMMITTED = [
    ("PointCloudLibrary/pcl", "test/bun0.pcd", "PCD v0.7 binary_compressed, xyz only, PCL padding", "agree"),
    ("PointCloudLibrary/pcl", "test/bun01.pcd", "PCD binary_compressed (PCL)", "agree"),
    ("PointCloudLibrary/pcl", "test/bun02.pcd", "PCD binary_compressed (PCL)", "agree"),
    ("PointCloudLibrary/pcl", "test/bun03.pcd", "PCD binary_compressed (PCL)", "agree"),
    ("PointCloudLibrary/pcl", "test/bun4.pcd", "PCD ascii with a normal/curvature layout", "agree"),
    ("PointCloudLibrary/pcl", "test/bunny.pcd", "PCD ascii xyz", "agree"),
    ("PointCloudLibrary/pcl", "test/car6.pcd", "PCD binary xyz + packed rgb", "agree"),
    ("PointCloudLibrary/pcl", "test/colored_cloud.pcd", "PCD binary_compressed xyz + rgb", "agree"),
    ("PointCloudLibrary/pcl", "test/curve2d.pcd", "PCD ascii", "agree"),
    ("PointCloudLibrary/pcl", "test/curve3d.pcd", "PCD ascii", "agree"),
    ("PointCloudLibrary/pcl", "test/curve_close.pcd", "PCD ascii", "agree"),
    ("PointCloudLibrary/pcl", "test/ism_test.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/ism_train.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/lamppost.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/milk.pcd", "PCD binary_compressed, NaN normals (estimation failed)", "agree"),
    ("PointCloudLibrary/pcl", "test/milk_color.pcd", "PCD binary_compressed xyz + rgb", "agree"),
    ("PointCloudLibrary/pcl", "test/nhood_test.pcd", "PCD ascii", "agree"),
    ("PointCloudLibrary/pcl", "test/noisy_slice_displaced.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/octants.pcd", "PCD ascii, 8 points", "agree"),
    ("PointCloudLibrary/pcl", "test/office1_keypoints.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/office2_keypoints.pcd", "PCD binary_compressed", "agree"),
    ("PointCloudLibrary/pcl", "test/pcl_logo.pcd", "PCD binary_compressed xyz + rgba", "agree"),
    ("PointCloudLibrary/pcl", "test/2d/canny.pcd", "PCD organized (WIDTH x HEIGHT image grid)", "agree"),
    ("PointCloudLibrary/pcl", "test/2d/erosion_binary.pcd", "PCD organized binary image", "agree"),
    (
        "PointCloudLibrary/pcl",
        "test/sac_plane_test.pcd",
        "PCD with NaN normals where PCL's estimation failed (15 of 3,283 points)",
        "agree",
    ),
    (
        "PointCloudLibrary/pcl",
        "test/table_scene_mug_stereo_textured.pcd",
        "organized 640 x 480 stereo cloud, NaN points where stereo found no depth",
        "agree",
    ),
    ("PointCloudLibrary/pcl", "test/cube.ply", "PLY written by PCL's PLYWriter", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.0_0.las", "LAS 1.0 point format 0", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.0_1.las", "LAS 1.0 point format 1", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.1_0.las", "LAS 1.1 point format 0", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.1_1.las", "LAS 1.1 point format 1", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.2_0.las", "LAS 1.2 point format 0", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.2_1.las", "LAS 1.2 point format 1", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.2_2.las", "LAS 1.2 point format 2 (RGB)", "agree"),
    ("PDAL/PDAL", "test/data/las/permutations/1.2_3.las", "LAS 1.2 point format 3 (RGB + time)", "agree"),
    (
        "PDAL/PDAL",
        "test/data/las/permutations/1.2-no-points.las",
        "header declares 1065 points, no records follow",
        "refuse: the point count disagrees with the file's size, which PDAL refuses (as 1.2-with-color-clipped.las); "
        "laspy reads 0 points",
    ),
    ("PDAL/PDAL", "test/data/las/100-points.las", "LAS 1.2, georeferenced (UTM)", "agree"),
    ("PDAL/PDAL", "test/data/las/1.2-with-color.las", "LAS 1.2 format 3, UTM coordinates near 4.9e6 m", "agree"),
    (
        "PDAL/PDAL",
        "test/data/las/1.2-with-color-clipped.las",
        "header count one more than the records",
        "refuse: PDAL's own test expects an error (LasReaderTest LasHeaderIncorrectPointcount); laspy reads 1064",
    ),
    (
        "PDAL/PDAL",
        "test/data/las/bad_vlr_count.las",
        "VLR count larger than the VLRs present",
        "refuse: PDAL reads it only with ignore_missing_vlrs=true (LasReaderTest); laspy reads it",
    ),
    ("PDAL/PDAL", "test/data/las/test1_4.las", "LAS 1.4 point format 6", "agree"),
    ("PDAL/PDAL", "test/data/las/prec3.las", "LAS with 3-decimal scale", "agree"),
    ("PDAL/PDAL", "test/data/las/spec_3.las", "LAS 1.2", "agree"),
    ("PDAL/PDAL", "test/data/las/synthetic_test.las", "LAS 1.2", "agree"),
    ("PDAL/PDAL", "test/data/las/interesting.las", "LAS 1.2 format 3", "agree"),
    ("PDAL/PDAL", "test/data/las/utm15.las", "LAS, UTM zone 15", "agree"),
    ("PDAL/PDAL", "test/data/las/test_utm17.las", "LAS, UTM zone 17", "agree"),
    ("PDAL/PDAL", "test/data/las/extrabytes.las", "LAS 1.4 with extra bytes", "agree"),
    ("PDAL/PDAL", "test/data/las/gps-time-nan.las", "NaN GPS times (not read)", "agree"),
    ("PDAL/PDAL", "test/data/autzen/autzen-utm.las", "LAS, UTM 0.01 m scale: float32 was 0.25 m off", "agree"),
    ("PDAL/PDAL", "test/data/autzen/autzen-point-format-3.las", "LAS format 3, State Plane feet", "agree"),
    ("PDAL/PDAL", "test/data/autzen/autzen-dd.las", "LAS in decimal degrees (scale 1e-7)", "agree"),
    ("PDAL/PDAL", "test/data/laz/simple.laz", "LAZ (LASzip 2.x, chunked)", "agree"),
    ("PDAL/PDAL", "test/data/laszip/laszip-generated.laz", "LAZ written by laszip", "agree"),
    ("PDAL/PDAL", "test/data/laszip/liblas-generated.laz", "LAZ written by liblas", "agree"),
    ("PDAL/PDAL", "test/data/laszip/laszip-generated_with2bytespadding.laz", "LAZ with 2 bytes of padding", "agree"),
    (
        "PDAL/PDAL",
        "test/data/laz/simple-laszip-compressor-version-1.2r0.laz",
        "LAZ, LASzip compressor 1 (pointwise)",
        "refuse: lazrs cannot decode pointwise LAZ (laspy panics: 'Variable-size chunks, but no "
        "chunk table'); LAStools/PDAL read it",
    ),
    ("PDAL/PDAL", "test/data/pcd/utm17_space.pcd", "PCD ascii written by PDAL, upper-case X Y Z", "agree"),
    (
        "PDAL/PDAL",
        "test/data/pcd/utm17_tab.pcd",
        "PCD ascii, values separated by tabs (PDAL's test)",
        "same as pdal__test__data__pcd__utm17_space.pcd: pypcd4 and Open3D refuse it; PCL splits on blanks and tabs",
    ),
    (
        "PDAL/PDAL",
        "test/data/pcd/utm17_comma.pcd",
        "PCD ascii, values separated by commas (PDAL's test)",
        "same as pdal__test__data__pcd__utm17_space.pcd: pypcd4 and Open3D refuse it; PDAL's reader accepts commas",
    ),
    ("PDAL/PDAL", "test/data/pcd/autzen-utm.pcd", "PCD written by PDAL, UTM doubles", "agree"),
    ("PDAL/PDAL", "test/data/ply/simple_text.ply", "PLY ascii (PDAL)", "agree"),
    ("PDAL/PDAL", "test/data/ply/simple_binary.ply", "PLY binary (PDAL)", "agree"),
    ("PDAL/PDAL", "test/data/ply/mesh.ply", "PLY mesh with faces (PDAL)", "agree"),
    ("PDAL/PDAL", "test/data/ply/text_extradim.ply", "PLY ascii with an extra dimension", "agree"),
    ("PDAL/PDAL", "test/data/ept/1.2-with-color/ept-data/0-0-0-0.laz", "LAZ tile of an EPT index", "agree"),
    ("laspy/laspy", "tests/data/simple.las", "LAS 1.2 format 3", "agree"),
    ("laspy/laspy", "tests/data/simple1_1.las", "LAS 1.1", "agree"),
    ("laspy/laspy", "tests/data/simple1_3.las", "LAS 1.3", "agree"),
    ("laspy/laspy", "tests/data/test1_4.las", "LAS 1.4", "agree"),
    ("laspy/laspy", "tests/data/1_4_w_evlr.las", "LAS 1.4 with EVLRs", "agree"),
    ("laspy/laspy", "tests/data/1_4_w_evlr.laz", "LAZ 1.4 with EVLRs", "agree"),
    ("laspy/laspy", "tests/data/extrabytes.las", "LAS with extra bytes", "agree"),
    ("laspy/laspy", "tests/data/unregistered_extra_bytes.las", "extra bytes without their VLR", "agree"),
    ("laspy/laspy", "tests/data/extra.laz", "LAZ with extra bytes", "agree"),
    ("laspy/laspy", "tests/data/plane.laz", "LAZ 1.4 point format 6+", "agree"),
    ("laspy/laspy", "tests/data/simple.copc.laz", "COPC (cloud-optimized LAZ)", "agree"),
    ("laspy/laspy", "tests/data/fullwave.laz", "LAZ with waveform packets", "agree"),
]


def _git_blob(mirror: Path, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(mirror), "show", f"{commit}:{path}"], capture_output=True,
                          check=True).stdout  # fmt: skip


def extract(out: Path, mirrors: Path) -> int:
    """Every .pcd/.ply/.las/.laz of :data:`SOURCES` at its commit, into ``out/<owner>+<name>/<path>``."""
    n = 0
    for repo, (commit, _, _) in SOURCES.items():
        mirror = mirrors / repo.replace("/", "+") / "repo"
        if not mirror.exists():
            print(f"skip {repo}: no mirror at {mirror} (fetch github:{repo} first)", file=sys.stderr)
            continue
        names = subprocess.run(["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", commit], capture_output=True,
                               text=True, check=True).stdout.split("\n")  # fmt: skip
        for name in names:
            if not name.lower().endswith((".pcd", ".ply", ".las", ".laz")):
                continue
            try:
                data = _git_blob(mirror, commit, name)
            except subprocess.CalledProcessError:
                continue  # large files stored outside the mirror
            if not data:
                continue
            dest = out / repo.replace("/", "+") / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            n += 1
    print(f"extracted {n} files into {out}")
    return 0


def generate(out: Path) -> int:
    """Files written by the tools' own writers (those installed): Open3D (PLY, PCD in its three encodings), laspy
    (LAS 1.2/1.4, point formats 0-10, extra bytes, LAZ through lazrs), plyfile (doubles), pypcd4."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 500
    xyz = rng.uniform(-20, 20, (n, 3)) + np.array([500_000.0, 4_300_000.0, 120.0])  # UTM-like
    local = rng.uniform(-3, 3, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3))
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm[::37] = np.nan  # as PCL / Open3D leave them where estimation failed
    out.mkdir(parents=True, exist_ok=True)
    made = []
    try:
        import open3d as o3d

        pc = o3d.geometry.PointCloud()
        pc.points = o3d.utility.Vector3dVector(local.astype(np.float64))
        pc.colors = o3d.utility.Vector3dVector(rgb / 255.0)
        pc.normals = o3d.utility.Vector3dVector(nrm)
        for name, kw in (("open3d-ascii.ply", {"write_ascii": True}), ("open3d-binary.ply", {}),
                         ("open3d-ascii.pcd", {"write_ascii": True}), ("open3d-binary.pcd", {}),
                         ("open3d-compressed.pcd", {"compressed": True})):  # fmt: skip
            o3d.io.write_point_cloud(str(out / name), pc, **kw)
            made.append(name)
    except ImportError:
        print("open3d absent: no Open3D-written files", file=sys.stderr)
    try:
        import laspy

        for version, formats in (("1.2", (0, 1, 2, 3)), ("1.3", (4, 5)), ("1.4", (6, 7, 8, 9, 10))):
            for fmt in formats:
                header = laspy.LasHeader(point_format=fmt, version=version)
                header.scales = np.array([0.001, 0.001, 0.001])
                header.offsets = np.floor(xyz.min(0))
                if fmt in (6, 8):
                    header.add_extra_dim(laspy.ExtraBytesParams(name="confidence", type=np.float32))
                las = laspy.LasData(header)
                las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
                las.intensity = rng.integers(0, 65536, n).astype(np.uint16)
                las.classification = rng.integers(0, 20, n).astype(np.uint8)
                if "red" in las.point_format.dimension_names:
                    las.red, las.green, las.blue = (rgb * 257).T.astype(np.uint16)
                if fmt in (6, 8):
                    las.confidence = rng.random(n).astype(np.float32)
                for suffix in (".las", ".laz"):
                    name = f"laspy-{version}-fmt{fmt}{suffix}"
                    try:
                        las.write(str(out / name))
                        made.append(name)
                    except Exception as e:  # no LAZ backend
                        print(f"laspy could not write {name}: {e}", file=sys.stderr)
    except ImportError:
        print("laspy absent: no laspy-written files", file=sys.stderr)
    try:
        import plyfile

        v = np.empty(n, [("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
        v["x"], v["y"], v["z"] = xyz.T
        v["red"], v["green"], v["blue"] = rgb.T
        for name, text in (("plyfile-double-ascii.ply", True), ("plyfile-double-binary.ply", False)):
            plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")], text=text).write(str(out / name))
            made.append(name)
    except ImportError:
        print("plyfile absent: no plyfile-written files", file=sys.stderr)
    try:
        import pypcd4

        pc = pypcd4.PointCloud.from_xyzrgb_points(np.column_stack([local, pypcd4.PointCloud.encode_rgb(rgb)]))
        for enc, name in (("ascii", "pypcd4-ascii.pcd"), ("binary", "pypcd4-binary.pcd"),
                          ("binary_compressed", "pypcd4-compressed.pcd")):  # fmt: skip
            pc.save(str(out / name), encoding=pypcd4.Encoding(enc))
            made.append(name)
    except ImportError:
        print("pypcd4 absent: no pypcd4-written files", file=sys.stderr)
    print(f"wrote {len(made)} files into {out}: {', '.join(made)}")
    return 0


_CHILD = r"""
import io, os, resource, sys, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
out = os.dup(1)
os.dup2(2, 1)  # what the readers print (Open3D's warnings) goes to stderr, not into the result
from pointins.data.readers.reference import read_reference
ref = read_reference(sys.argv[1], sys.argv[3] or None)
buf = io.BytesIO(); np.savez(buf, **ref); os.write(out, buf.getvalue())
"""


def reference_in_child(path: Path, reader: str | None = None, mem_mb: int = 4096, timeout: float = 120.0):
    """The reference reading of ``path`` from a memory-limited child, or an error string."""
    import io

    import numpy as np

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), RUST_BACKTRACE="0")
    try:
        cmd = [sys.executable, "-c", _CHILD, str(path), str(mem_mb * 2**20), reader or ""]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        return (lines[-1] if lines else f"exit {res.returncode}")[:200]
    try:
        with np.load(io.BytesIO(res.stdout), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        return f"no usable result ({e})"


def compare_file(path: Path) -> tuple[str, str, str]:
    """(verdict, detail, reference used): agree / differ / ours-refuses / reference-refuses / both-refuse."""
    import warnings

    from pointins.data import DataError
    from pointins.data.readers import read_counted
    from pointins.data.readers.reference import compare, reference_for

    ref, used = reference_in_child(path), reference_for(path)
    if isinstance(ref, str) and path.suffix.lower() in (".pcd", ".ply"):  # a second opinion (see reference.py)
        second = reference_in_child(path, "open3d")
        if not isinstance(second, str) and len(second["coord"]):
            ref, used = second, f"open3d (pypcd4/plyfile: {ref})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours, counts = read_counted(path, nan="drop")
        err = None
    except DataError as e:
        ours, err = None, e.problem
    if isinstance(ref, str):
        verdict = "both-refuse" if err else "reference-refuses"
        return verdict, (f"ours: {err} | " if err else "") + f"reference: {ref}", used
    if err:
        return "ours-refuses", err, used
    bad = compare(ours, ref)
    note = f" ({counts.describe()})" if counts else ""
    note += "" if used == reference_for(path) else f" [reference: {used}]"
    if bad:
        return "differ", "; ".join(bad) + note, used
    return "agree", f"{len(ours['coord'])} points{note}", used


def compare_all(folder: Path, out_json: Path | None) -> int:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".pcd", ".ply", ".las", ".laz"))
    rows, tally = [], {}
    for p in files:
        verdict, detail, _ = compare_file(p)
        tally[verdict] = tally.get(verdict, 0) + 1
        rows.append({"file": str(p.relative_to(folder)), "verdict": verdict, "detail": detail})
        print(f"{verdict:18s} {p.relative_to(folder)}: {detail[:160]}", flush=True)
    print(f"{len(files)} files: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    if out_json:
        Path(out_json).write_text(json.dumps({"tally": tally, "files": rows}, indent=1))
    return 0


def commit(corpus: Path) -> int:
    """Copy :data:`COMMITTED` from ``corpus`` (``extract``'s and ``generate``'s output) into tests/data/realworld/
    and write its manifest.json."""
    if DEST.exists():
        shutil.rmtree(DEST)
    DEST.mkdir(parents=True)
    entries = []
    for repo, path, what, expect in COMMITTED:
        src = corpus / repo.replace("/", "+") / path
        name = f"{repo.split('/')[0].lower()}__{path.replace('/', '__')}"
        shutil.copy(src, DEST / name)
        commit_, licence, _ = SOURCES[repo]
        entries.append({"file": name, "repository": f"github:{repo}", "commit": commit_, "path": path,
                        "licence": licence, "exercises": what, "expect": expect,
                        **_verdict(DEST / name, expect)})  # fmt: skip
    tools = corpus / "tools"
    for p in sorted(tools.glob("*")) if tools.exists() else []:
        shutil.copy(p, DEST / p.name)
        writer = p.name.split("-")[0]
        entries.append({"file": p.name, "repository": None, "commit": None, "path": None, "licence": "project's own "
                        "(generated)", "exercises": f"written by {writer} ({_versions().get(writer, '?')}) with "
                        "tools/realworld_corpus.py generate", "expect": "agree",
                        **_verdict(DEST / p.name, "agree")})  # fmt: skip
    (DEST / "manifest.json").write_text(json.dumps({"files": entries}, indent=1) + "\n")
    size = sum(p.stat().st_size for p in DEST.iterdir())
    print(f"{len(entries)} files, {size / 2**20:.1f} MiB in {DEST}")
    return 0


def _verdict(path: Path, expect: str) -> dict:
    """The reference reader that judges ``path`` and what it said; refuses to commit a file whose verdict is not the
    expected one (agree, or ours refusing where the manifest says why)."""
    verdict, detail, used = compare_file(path)
    if expect.startswith("same as"):
        ok = verdict in ("agree", "reference-refuses")
    else:
        ok = verdict == "agree" if expect == "agree" else verdict in ("ours-refuses", "both-refuse")
    if not ok:
        raise SystemExit(f"{path.name}: expected {expect!r}, got {verdict}: {detail}")
    return {"reference": used.split(" ")[0], "reference_says": "agree" if verdict == "agree" else detail,
            "note": used if used != used.split(" ")[0] else ""}  # fmt: skip


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("open3d", "laspy", "plyfile", "pypcd4", "lazrs"):
        try:
            out[name] = f"{name} {version(name)}"
        except PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/realworld_corpus.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="copy the sources' point-cloud files out of their git mirrors")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--mirrors", type=Path, default=ROOT.parent / ".mirror")
    g = sub.add_parser("generate", help="write files with Open3D, laspy, plyfile, pypcd4 (those installed)")
    g.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="ours vs the reference readers, file by file")
    c.add_argument("folder", type=Path)
    c.add_argument("--json", type=Path, default=None)
    m = sub.add_parser("commit", help="refresh tests/data/realworld/ from a corpus folder")
    m.add_argument("corpus", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "extract":
        return extract(a.out, a.mirrors)
    if a.cmd == "generate":
        return generate(a.out)
    if a.cmd == "compare":
        return compare_all(a.folder, a.json)
    return commit(a.corpus)


if __name__ == "__main__":
    raise SystemExit(main())
