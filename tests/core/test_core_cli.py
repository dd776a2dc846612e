"""`kseg segment` (shared.core_cli): files written on success; one-line errors on failure."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kseg.shared.cli import segment as core_cli

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kseg.shared.cli.segment", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_success_writes_files(tmp_path: Path, baby_path: Path) -> None:
    proc = run_module(str(baby_path), "-k", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outdir = tmp_path / "baby-kseg"
    names = {p.name for p in outdir.iterdir()}
    assert names == {
        "labels.png",
        "gray.png",
        "color.png",
        "recolor.png",
        "overlay.png",
        "result.json",
    }
    result = json.loads((outdir / "result.json").read_text())
    assert result["k"] == 4 and len(result["clusters"]) == 4
    assert result["params"]["k"] == 4
    with Image.open(outdir / "recolor.png") as img:
        assert img.size == (100, 133)
    assert "k=4" in proc.stdout and "PSNR" in proc.stdout and "#" in proc.stdout
    assert proc.stderr == ""


def test_options_in_process(tmp_path: Path, baby_path: Path, capsys) -> None:
    code = core_cli.main(
        [
            str(baby_path),
            "-k",
            "auto",
            "--k-max",
            "5",
            "--outputs",
            "gray",
            "--color-space",
            "lab",
            "--normalize",
            "minmax",
            "--max-side",
            "50",
            "--seed",
            "3",
            "-o",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gray.png", "result.json"]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [s["k"] for s in result["k_scores"]] == [2, 3, 4, 5]


def test_subparser_registration(tmp_path: Path, baby_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="kseg")
    sub = parser.add_subparsers(dest="command")
    core_cli.add_segment_parser(sub)
    args = parser.parse_args(["segment", str(baby_path), "-k", "3", "-o", str(tmp_path), "-q"])
    assert args.func is core_cli.run_segment
    assert args.func(args) == 0
    assert (tmp_path / "result.json").exists()


def test_help_lists_every_option(tmp_path: Path) -> None:
    proc = run_module("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in (
        "-k",
        "--k-min",
        "--k-max",
        "--normalize",
        "--color-space",
        "--outputs",
        "--max-side",
        "--seed",
        "--outdir",
        "--quiet",
        "default",
    ):
        assert option in proc.stdout


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kseg: error: ")
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    proc = run_module(str(tmp_path / "nope.jpg"), cwd=tmp_path)
    assert_one_line_error(proc, 2)
    assert "no such file" in proc.stderr


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n" * 20)
    proc = run_module(str(path), cwd=tmp_path)
    assert_one_line_error(proc, 1)
    assert "not an image" in proc.stderr
    assert not (tmp_path / "notes-kseg").exists()


def test_truncated_image(tmp_path: Path, baby_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(baby_path.read_bytes()[:2000])
    assert_one_line_error(run_module(str(path), cwd=tmp_path), 1)


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "1"],
        ["-k", "257"],
        ["-k", "many"],
        ["--normalize", "z"],
        ["--max-side", "3"],
        ["--outputs", "nope"],
        ["-k", "auto", "--k-min", "9", "--k-max", "3"],
        ["--seed", "x"],
    ],
)
def test_bad_parameters(tmp_path: Path, baby_path: Path, args: list[str]) -> None:
    assert_one_line_error(run_module(str(baby_path), *args, cwd=tmp_path), 2)


def test_reader_closing_pipe_is_not_an_error(tmp_path: Path, baby_path: Path) -> None:
    # `kseg segment img | head -1`: the reader may be gone before the summary is printed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "kseg.shared.cli.segment", str(baby_path), "-k", "3"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the child has imported numpy
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "Error" not in err
    assert (tmp_path / "baby-kseg" / "result.json").exists()
