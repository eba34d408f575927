"""How ``ternary-accel`` names flags in its errors, and refuses flags that do not apply.

The library's messages name its parameters (``tokens``, ``output_stage=True``); the CLI
rewrites them with the flags the user typed (:func:`ternary_accel.cli.argtypes.name_flags`).
A flag that has no effect on the job chosen is refused rather than ignored. An optional
package that is not installed, or a path that cannot be written, is one line too.
"""

import argparse
import json
import sys

import pytest

from cli_runner import invoke
from ternary_accel.cli.argtypes import FlagErrors, flag_names, name_flags, refuse_unless

FLAGS = {"output_rows": "--output-rows", "output_stage": "--output-stage",
         "rows": "--rows", "tokens": "--reuse", "act_copies": "--act-copies",
         "hidden": "--hidden", "heads": "--heads"}


@pytest.mark.parametrize("message, named", [
    # a parameter with an underscore, anywhere; name=True is the flag
    ("output_rows is a parameter of the output stage (output_stage=True)",
     "--output-rows is a parameter of the output stage (--output-stage)"),
    ("output_stage=False here", "--no-output-stage here"),
    # a one-word parameter at the start, or before its value in parentheses
    ("tokens must be at most 256, not 1000", "--reuse must be at most 256, not 1000"),
    ("heads (3) must divide hidden (10)", "--heads (3) must divide --hidden (10)"),
    ("act_copies must be at most rows (8), not 9",
     "--act-copies must be at most --rows (8), not 9"),
    ("tokens=16 is too many", "--reuse 16 is too many"),
    # other words stay words
    ("a layer of 8 rows", "a layer of 8 rows"),
    ("the tokens of a prompt", "the tokens of a prompt"),
    # a flag already named is left alone
    ("--output-rows needs --rows", "--output-rows needs --rows"),
])
def test_name_flags(message, named):
    assert name_flags(message, FLAGS) == named


def _parser():
    parser = argparse.ArgumentParser(prog="prog")
    parser.add_argument("--output-rows", type=int)
    parser.add_argument("--lanes", "-k", type=int, default=16)
    parser.add_argument("--reuse", dest="tokens", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    return parser


def test_flag_names_come_from_the_parser():
    assert flag_names(_parser()) == {"output_rows": "--output-rows", "lanes": "--lanes",
                                     "tokens": "--reuse", "quick": "--quick"}
    assert flag_names(_parser(), tokens="--tokens")["tokens"] == "--tokens"


def test_flag_errors_rewrites_the_message(capsys):
    with pytest.raises(SystemExit) as exit_:
        FlagErrors(_parser()).error("output_rows must divide rows (8), not 3")
    assert exit_.value.code == 2
    assert "prog: error: --output-rows must divide rows (8), not 3" in capsys.readouterr().err


@pytest.mark.parametrize("argv, refused", [
    ([], None), (["--quick"], "--quick"), (["--lanes", "8"], "--lanes"),
    (["--lanes", "16"], None),        # the default value, typed: no effect either way
])
def test_refuse_unless(argv, refused, capsys):
    parser = _parser()
    args = parser.parse_args(argv)
    refuse_unless(parser, args, True, "with --other", "quick", "lanes")   # applies
    if refused is None:
        refuse_unless(parser, args, False, "with --other", "quick", "lanes")
        return
    with pytest.raises(SystemExit):
        refuse_unless(parser, args, False, "with --other", "quick", "lanes")
    assert f"prog: error: {refused} applies only with --other" in capsys.readouterr().err


def one_line(result, status):
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["bench", "area", "--from-json", "x.json", "--quick"],
     "--quick applies only without --from-json"),
    (["bench", "area", "--from-json", "x.json", "--only", "unit*"],
     "--only applies only without --from-json"),
    (["bench", "block", "--layer", "1"], "--layer applies only with --checkpoint"),
    (["bench", "block", "--checkpoint", "x", "--model", "b1.58-3b"],
     "--model applies only without --checkpoint"),
    (["bench", "sparse", "--only", "relu2", "--gate-zeros", "0.5"],
     "--gate-zeros applies only with the dense or a4.8 scenario"),
    (["bench", "sparse", "--only", "a4.8", "--down-zeros", "0.5"],
     "--down-zeros applies only with the a4.8-down scenario"),
    (["sim", "--list", "--seed", "3"], "--seed applies only without --list"),
    (["sim", "--list", "--waves"], "--waves applies only without --list"),
    (["synth", "--lane-group", "--rows", "4"],
     "--rows applies only to a unit or an engine, not with --lane-group"),
    (["synth", "--lane-group", "--output-stage"], "--output-stage applies only"),
])
def test_flags_that_do_not_apply_are_refused(args, message, tmp_path):
    line = one_line(invoke(*args, cwd=tmp_path), 2)
    assert message in line
    assert not any(tmp_path.iterdir())     # refused before anything was built or written


@pytest.mark.parametrize("args", [
    ["schemes", "--context", "10000000"],
    ["energy", "token", "--context", "10000000"],
    ["perf", "--context", "4096"],
    ["perf", "--prompt", "5000"],
])
def test_positions_past_the_model_are_refused(args):
    line = one_line(invoke(*args), 2)
    assert f"{args[-2]} {args[-1]}:" in line and "max_position_embeddings" in line


def test_missing_plotting_extra_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib fails
    line = one_line(invoke("perf", "--roofline", tmp_path / "r.png"), 1)
    assert "pip install 'ternary-accel[plots]'" in line


def test_missing_checkpoint_extra_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.delitem(sys.modules, "ternary_accel.model.checkpoint", raising=False)
    line = one_line(invoke("model", "make-tiny", tmp_path / "tiny"), 1)
    assert "pip install 'ternary-accel[checkpoints]'" in line


def test_help_needs_no_optional_package(monkeypatch):
    for name in ("safetensors", "tokenizers", "matplotlib", "distributed", "dask"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in [m for m in sys.modules if m.startswith("ternary_accel.cli")] + \
            ["ternary_accel.model.checkpoint"]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    from ternary_accel.cli.main import main
    assert main(["--help"]) == 0


def test_unwritable_path_is_one_line():
    # /proc takes no new folders, whoever runs the test (root included)
    line = one_line(invoke("energy", "report", "--outdir", "/proc/ternary-accel-test"), 1)
    assert line.startswith("ternary-accel: error: /proc/ternary-accel-test")


@pytest.mark.verilator
def test_sim_table_as_json(tmp_path, monkeypatch):
    # the smallest regression configuration, built under tmp_path (TERNARY_ACCEL_BUILD)
    monkeypatch.setenv("TERNARY_ACCEL_BUILD", str(tmp_path))
    name = invoke("sim", "--list").stdout.split()[0]
    result = invoke("sim", "--config", name, "--format", "json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)          # stdout is the table alone
    assert row["configuration"] == name and row["result"] == "PASS" and row["tests"] > 0
    assert (tmp_path / "sim" / name).is_dir()   # the build went where the variable says
    assert "passed" in result.stderr


@pytest.mark.verilator
@pytest.mark.xdist_group("engine-acc")   # the build of the other bench block test
def test_bench_block_tables_as_json(tmp_path):
    # the tiny checkpoint's layer on the 16 x 8 engine
    assert invoke("model", "make-tiny", tmp_path / "tiny").returncode == 0
    result = invoke("bench", "block", "--checkpoint", tmp_path / "tiny", "--lanes", "16",
                    "--rows", "8", "--prompt-tokens", "2", "--decode-steps", "1",
                    "--format", "json")
    assert result.returncode == 0, result.stderr
    tables = json.loads(result.stdout)           # stdout is the tables alone
    assert [row["step"] for row in tables["steps"]] == ["prefill", "decode 1"]
    assert all(row["bit_exact"] for row in tables["steps"])
    assert all(row["cycles"] == row["predicted"] for row in tables["projections"])
    assert "all steps bit-exact" in result.stderr
