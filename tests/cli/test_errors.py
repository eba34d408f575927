"""Every bad input to ``ternary-accel`` is one clear line, never a traceback.

Each case the issue lists has a test, and beside it a test of the kind of case it stands
for, run over the whole command tree where it can be (every ``--seed``, every numeric
flag, every output path), so that a flag added later is checked too:

- a usage error (a bad flag, a value out of range, a path that cannot be written, a flag
  that does not apply) exits with status 2 and one line ``PROG: error: MESSAGE`` that names
  the flag as the user typed it, not the library's parameter;
- a job that fails (a bad checkpoint, an optional package not installed) exits with 1 and
  one line;
- no library warning reaches the user.

The parser-level checks parse only (``build_parser().parse_args``), so a value the CLI
wrongly accepted fails the test instead of starting a simulation or a synthesis.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cli_runner import invoke, usage_error
from ternary_accel.cli.main import build_parser



def job_error(result, *fragments):
    """Assert ``result`` is a failed job: status 1, one line on stderr, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint (and the folder it lives in)."""
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    result = invoke("model", "make-tiny", path, "--seed", "3")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def a_file(tmp_path):
    """A plain file, to name as a folder."""
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


# --- the command tree ---------------------------------------------------------------------

def _leaves(parser, path=()):
    """``(path, parser)`` of every command that runs a job."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, path + (name,))


LEAVES = list(_leaves(build_parser()))


def _options(predicate):
    """``(command path, flag)`` of every option taking a value for which
    ``predicate(action)`` holds, over the whole tree."""
    found = []
    for path, parser in LEAVES:
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and predicate(action):
                flag = max(action.option_strings, key=len)
                found.append(pytest.param(path, flag, id=" ".join(path + (flag,))))
    return found


def parse_error(capsys, *argv):
    """Parse ``argv`` only; return the one-line usage error (the parse must fail with 2)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


def _is_numeric(action):
    """Whether ``action`` takes a number (or a list of numbers): its type turns "1" or
    "0.5" into one, whatever the type function is called."""
    if action.type is None:
        return False
    for sample in ("1", "0.5", "128"):
        try:
            value = action.type(sample)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        values = value if isinstance(value, list) else [value]
        return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in values)
    return False


@pytest.mark.parametrize("path, flag", _options(_is_numeric))
@pytest.mark.parametrize("value", ["nan", pytest.param("inf", marks=pytest.mark.slow),
                                   pytest.param("-inf", marks=pytest.mark.slow), "x"])
def test_every_numeric_flag_refuses_non_finite_values(capsys, path, flag, value):
    line = parse_error(capsys, *path, flag, value)
    assert flag in line


#: Commands quick enough to run with a value the parser let through (their checks sit in
#: the job, before any work); the others must refuse a bad value while parsing.
LIGHT = {("perf",), ("schemes",), ("verilog",), ("synth",), ("energy", "table1"),
         ("energy", "sweep"), ("energy", "model"), ("energy", "token"), ("energy", "report")}

#: A model given by its parameters (energy table1/sweep/model), for checking one of them.
SHAPE_FLAGS = {"--hidden": "64", "--ffn": "128", "--layers": "2", "--heads": "4"}


def _negative_args(path, flag, tmp_path):
    args = [*path, flag, "-1"]
    if path == ("energy", "report"):
        args += ["--outdir", tmp_path]
    if path in {("energy", "table1"), ("energy", "sweep"), ("energy", "model")}:
        for shape_flag, value in SHAPE_FLAGS.items():
            if shape_flag != flag:
                args += [shape_flag, value]
    return args


@pytest.mark.parametrize("path, flag", _options(
    lambda a: _is_numeric(a) and a.dest != "prompt_ids"))
def test_every_numeric_flag_refuses_a_negative_value(capsys, cli, tmp_path, path, flag):
    """No count, size, rate, ratio or seed of the CLI is negative."""
    if path in LIGHT:
        usage_error(cli(*_negative_args(path, flag, tmp_path)), flag)
    else:
        assert flag in parse_error(capsys, *path, flag, "-1")


def test_a_token_id_out_of_the_vocabulary_names_the_flag(cli, tiny):
    for ids in ("-1", "1 100000"):
        usage_error(cli("model", "generate", tiny, "--prompt-ids", ids), "--prompt-ids")


@pytest.mark.parametrize("path, flag", _options(lambda a: a.dest == "seed"))
def test_every_seed_refuses_a_negative_value(capsys, path, flag):
    line = parse_error(capsys, *path, flag, "-1")
    assert "--seed" in line and "-1" in line


def test_bench_layer_seed_minus_one(cli):
    usage_error(cli("bench", "layer", "--seed", "-1"), "--seed", "-1")


# Options that name a file or folder the command writes.
OUTPUT_DESTS = {"outdir", "output", "build_dir", "logits_out", "roofline", "results"}


def test_every_output_path_flag_is_checked_when_parsed():
    """A path the command writes is checked by a path type of cli.argtypes (a file on
    the way refused), not taken as a bare Path and found unwritable at the end."""
    unchecked = [f"{' '.join(path)} {max(a.option_strings, key=len)}"
                 for path, parser in LEAVES for a in parser._actions
                 if a.dest in OUTPUT_DESTS and a.option_strings and
                 getattr(a.type, "__name__", "") not in ("output_dir", "output_file")]
    assert not unchecked


@pytest.mark.parametrize("path, flag", _options(lambda a: a.dest in OUTPUT_DESTS))
def test_every_output_path_under_a_file_is_refused(capsys, a_file, path, flag):
    line = parse_error(capsys, *path, flag, a_file / "child" / "out.txt")
    assert flag in line and "a_file" in line


# --- the cases --------------------------------------------------------------------

@pytest.mark.parametrize("command", [("perf",), ("schemes",), ("energy", "token")])
def test_a_huge_context_is_refused_before_anything_is_allocated(cli, command):
    started = time.monotonic()
    line = usage_error(cli(*command, "--context", "10000000"), "--context")
    assert "max_position_embeddings" in line
    assert time.monotonic() - started < 5


def test_perf_bounds_the_prompt_by_the_model(cli):
    started = time.monotonic()
    usage_error(cli("perf", "--prompt", "100000000"), "--prompt", "max_position_embeddings")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("flag", ["--prompt", "--context", "--batch"])
def test_perf_counts_are_integers_in_range(cli, flag):
    usage_error(cli("perf", flag, "-5"), flag)


def test_build_dir_under_a_file(cli, a_file, tiny):
    for command in (("bench", "layer"), ("bench", "block"), ("bench", "sparse")):
        usage_error(cli(*command, "--build-dir", a_file / "sub"), "--build-dir")
    usage_error(cli("model", "generate", tiny, "--prompt-ids", "1", "--rtl",
                    "--build-dir", a_file / "sub"), "--build-dir")


def test_logits_out_under_a_file_or_onto_a_folder(cli, a_file, tiny, tmp_path):
    usage_error(cli("model", "generate", tiny, "--prompt-ids", "1",
                    "--logits-out", a_file / "x.npz"), "--logits-out")
    usage_error(cli("model", "generate", tiny, "--prompt-ids", "1",
                    "--logits-out", tmp_path), "--logits-out")


def test_logits_out_into_a_missing_folder_is_created(cli, tiny, tmp_path):
    out = tmp_path / "new" / "deeper" / "logits.npz"
    result = cli("model", "generate", tiny, "--prompt-ids", "1 2", "--max-new-tokens", "1",
                 "--logits-out", out)
    assert result.returncode == 0, result.stderr
    assert out.exists()


def test_make_tiny_into_a_file_or_under_one(cli, a_file):
    usage_error(cli("model", "make-tiny", a_file), "a_file")
    usage_error(cli("model", "make-tiny", a_file / "sub"), "a_file")
    assert a_file.read_text() == "not a folder\n"


def test_make_tiny_on_a_checkpoint_names_the_overwrite_flag(cli, tiny):
    line = usage_error(cli("model", "make-tiny", tiny), "--overwrite")
    assert "overwrite=True" not in line


def test_energy_report_outdir_under_a_file(cli, a_file):
    usage_error(cli("energy", "report", "--outdir", a_file / "sub"), "--outdir")


def test_perf_roofline_into_a_missing_folder_is_created(cli, tmp_path):
    png = tmp_path / "missing" / "folder" / "roofline.png"
    result = cli("perf", "--prompt", "4", "--format", "json", "--roofline", png)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_perf_roofline_onto_a_folder_or_under_a_file(cli, tmp_path, a_file):
    usage_error(cli("perf", "--roofline", tmp_path), "--roofline")
    usage_error(cli("perf", "--roofline", a_file / "r.png"), "--roofline")


def test_verilog_output_under_a_file(cli, a_file):
    usage_error(cli("verilog", "-o", a_file / "unit.v"), "--output")


@pytest.mark.parametrize("flag, value", [("--rows", "3"), ("--lanes", "8"),
                                         ("--build-dir", "somewhere"), ("--waves", None),
                                         ("--head-rows", "2")])
def test_generate_refuses_rtl_flags_without_rtl(cli, tiny, flag, value):
    args = [flag] if value is None else [flag, value]
    usage_error(cli("model", "generate", tiny, "--prompt-ids", "1", *args), flag, "--rtl")


def test_reuse_out_of_range_names_reuse(cli):
    line = usage_error(cli("bench", "layer", "--reuse", "1000"), "--reuse", "256")
    assert "tokens" not in line


def test_output_rows_without_the_stage_names_the_flags(cli):
    line = usage_error(cli("verilog", "--engine", "--output-rows", "1"), "--output-rows",
                       "--output-stage")
    assert "output_stage" not in line and "=True" not in line


def test_library_parameter_names_become_flags(cli):
    """The kind of case: a library message naming a parameter with an underscore is
    shown with the flag the user typed."""
    line = usage_error(cli("verilog", "--engine", "--weight-port-bits", "100"),
                       "--weight-port-bits")
    assert "weight_port_bits" not in line
    line = usage_error(cli("verilog", "--rows", "4", "--act-copies", "5"), "--act-copies")
    assert "act_copies" not in line


def test_config_errors_name_the_config_key(cli, tiny, tmp_path):
    """A checkpoint's config.json is not a flag: its errors name its keys as spelled in
    the file (hidden_size, not hidden)."""
    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    config = json.loads((bad / "config.json").read_text())
    config["hidden_size"] = 63
    (bad / "config.json").write_text(json.dumps(config))
    line = job_error(cli("model", "inspect", bad), "hidden_size")
    assert "hidden " not in line.replace("hidden_size", "")


def test_bench_layer_help_states_the_default_of_layers(cli):
    result = cli("bench", "layer", "--help")
    assert result.returncode == 0
    assert "the model has" not in result.stdout
    assert "--layers" in result.stdout


def test_engine_verilog_is_named_layer_engine(cli):
    result = cli("verilog", "--engine", "--lanes", "4", "--rows", "2")
    assert result.returncode == 0, result.stderr
    assert "module layer_engine(" in result.stdout
    assert "matmul_unit(" not in result.stdout


def test_no_library_warning_reaches_the_user():
    """Components built to read their latency and dropped (bench layer builds the engine
    before it checks the layers' tiling) say nothing on stderr, even after the
    interpreter collects them at exit."""
    env = dict(os.environ, PYTHONWARNINGS="default")
    result = subprocess.run([sys.executable, "-m", "ternary_accel.cli", "bench", "layer",
                             "--lanes", "7"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- flags that do not apply --------------------------------------------------------------

@pytest.mark.parametrize("args, flag", [
    (["verilog", "--tokens", "4"], "--tokens"),
    (["verilog", "--acc-tiles", "4"], "--acc-tiles"),
    (["perf", "--sparsity", "0.5"], "--sparsity"),
    (["schemes", "--scheme", "a4.8", "--sparsity", "0.5"], "--sparsity"),
    (["energy", "table1", "--model", "bitnet-6.7b", "--hidden", "64"], "--model"),
    (["dse", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], "--jobs"),
    (["sim", "--list", "--seed", "3"], "--list"),
    (["sim", "--list", "--waves"], "--list"),
    (["bench", "area", "--from-json", "x.json", "--quick"], "--from-json"),
    (["bench", "area", "--from-json", "x.json", "--freq", "100"], "--from-json"),
])
def test_flags_that_do_not_apply_are_refused(cli, args, flag):
    usage_error(cli(*args), flag)


# --- optional extras ----------------------------------------------------------------------

_WITHOUT_EXTRAS = textwrap.dedent("""
    import sys
    for name in ("matplotlib", "safetensors", "tokenizers", "distributed", "dask"):
        sys.modules[name] = None      # as if the extra were not installed
    from ternary_accel.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _without_extras(*args, cwd):
    return subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, extra", [
    (["model", "inspect", "{tiny}"], "checkpoints"),
    (["model", "make-tiny", "new"], "checkpoints"),
    (["perf", "--prompt", "4", "--roofline", "r.png"], "plots"),
    (["dse", "--scheduler", "tcp://127.0.0.1:1"], "dse"),
])
def test_a_missing_extra_is_one_line_naming_the_install(tiny, tmp_path, args, extra):
    result = _without_extras(*[a.format(tiny=tiny) for a in args], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"pip install 'ternary-accel[{extra}]'" in lines[0]


def test_help_and_the_core_jobs_need_no_extra(tmp_path):
    result = _without_extras("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = _without_extras("perf", "--prompt", "4", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "b1.58-2b4t"


def test_tokenizer_prompt_without_tokenizers(tiny, tmp_path):
    (tmp_path / "ck").mkdir()
    for file in tiny.iterdir():
        shutil.copy(file, tmp_path / "ck" / file.name)
    (tmp_path / "ck" / "tokenizer.json").write_text("{}")
    result = _without_extras("model", "generate", tmp_path / "ck", "--prompt", "hello",
                             cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "pip install 'ternary-accel[checkpoints]'" in result.stderr
    assert "Traceback" not in result.stderr


# --- the installed console script ---------------------------------------------------------

JOBS = ("verilog", "synth", "sim", "bench", "dse", "perf", "schemes", "energy", "model")


def test_console_script_lists_every_job():
    """The one test that runs the installed script as its own process."""
    script = shutil.which("ternary-accel", path=str(Path(sys.executable).parent)) \
        or shutil.which("ternary-accel")
    assert script, "the console script ternary-accel is not installed"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("positional arguments:")[1]
    for job in JOBS:
        assert f"\n    {job} " in listed, job
    for group, jobs in (("bench", ("area", "packing", "layer", "block", "sparse")),
                        ("model", ("inspect", "make-tiny", "generate")),
                        ("energy", ("table1", "b158", "sweep", "model", "token",
                                    "report"))):
        result = subprocess.run([script, group, "--help"], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        for job in jobs:
            assert job in result.stdout, (group, job)
    bad = subprocess.run([script, "bench", "layer", "--seed", "-1"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


# --- sizes past what the model or the machine holds ---------------------------------------

@pytest.fixture
def no_build(monkeypatch):
    """A bench that let a bad size through fails here instead of building the engine."""
    from ternary_accel.sim.session import EngineSession

    def start(self):
        raise AssertionError("the bench accepted the size and went on to build the engine")
    monkeypatch.setattr(EngineSession, "start", start)


@pytest.mark.parametrize("args, flag", [
    (["bench", "layer", "--tokens", "100000000"], "--tokens"),
    (["bench", "sparse", "--tokens", "100000000"], "--tokens"),
    (["bench", "block", "--prompt-tokens", "100000000"], "--prompt-tokens"),
    (["bench", "block", "--decode-steps", "100000000"], "--decode-steps"),
    (["dse", "--prompt", "100000000"], "--prompt"),
    (["bench", "sparse", "--burst", "100000000000"], "--burst"),
])
def test_token_counts_past_the_model_are_refused_before_any_work(cli, no_build, args, flag):
    started = time.monotonic()
    usage_error(cli(*args), flag)
    assert time.monotonic() - started < 10
