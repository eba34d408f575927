"""``ternary-accel``: the command line of the ternary (BitNet b1.58) accelerator.

Every job is a subcommand; ``ternary-accel COMMAND --help`` says what it takes. The
conventions are the same everywhere: flags spelled as in the documentation, tables in
``--format markdown|csv|json``, files under ``--outdir`` (or a job's own path flag),
results on standard output and progress on standard error, exit status 0 on success, 1
when the job failed, 2 on a usage error (a one-line message naming the flag).
"""

import argparse
import contextlib
import gc
import io
import sys
import warnings
from importlib import metadata

from ternary_accel.cli.argtypes import output_dir
from ternary_accel.cli.results import write_results
from ternary_accel.cli import (bench_area, bench_block, bench_layer, bench_numerics,
                               bench_packing, bench_quality, bench_sparse, bench_system,
                               bench_token, bitstream, dse, energy, ip, model, perf, regmap,
                               sim, soc, synth, train, verilog)

__all__ = ["main", "run", "build_parser", "CommandParser", "OPTIONAL"]

#: ``ternary-accel bench NAME``: the benchmark commands, in ``--help`` order.
BENCHES = (("area", bench_area), ("packing", bench_packing), ("layer", bench_layer),
           ("block", bench_block), ("sparse", bench_sparse), ("quality", bench_quality),
           ("numerics", bench_numerics), ("token", bench_token), ("system", bench_system))


#: Optional packages, by the name they import as: the extra that installs them and what
#: needs them (pyproject's ``[project.optional-dependencies]``).
OPTIONAL = {
    "distributed": ("dse", "ternary-accel dse --scheduler"),
    "dask": ("dse", "ternary-accel dse --scheduler"),
    "safetensors": ("checkpoints", "reading and writing checkpoints"),
    "tokenizers": ("checkpoints", "--prompt (the checkpoint's tokenizer)"),
    "matplotlib": ("plots", "the figure"),
    "torch": ("train", "ternary-accel train"),
    "tqdm": ("train", "ternary-accel train"),
    "fusesoc": ("dev", "ternary-accel ip --lint"),
    "litex": ("soc", "ternary-accel soc-sim"),
    "litedram": ("soc", "ternary-accel soc-sim"),
    "migen": ("soc", "ternary-accel soc-sim"),
}


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2:
    ``ternary-accel bench layer: error: argument --seed: must be non-negative, not -1``.
    ``--help`` still shows the usage. Sub-parsers are of the same class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _missing_extra(error):
    """The one-line message for an optional package that is not installed, or None for
    any other missing module (a bug: the traceback is kept)."""
    top = (error.name or "").split(".")[0]
    if top not in OPTIONAL:
        return None
    extra, what = OPTIONAL[top]
    return (f"ternary-accel: error: {what} needs {top}, which is not installed: "
            f"pip install 'ternary-accel[{extra}]'")


def _version():
    try:
        return metadata.version("ternary-accel")
    except metadata.PackageNotFoundError:  # running from a tree that is not installed
        return "unknown"


def _add_simple(subparsers, name, module):
    """A subcommand from a module with ``HELP``, ``add_arguments`` and ``run``."""
    parser = subparsers.add_parser(
        name, help=module.HELP, description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)
    return parser


def _leaves(parser):
    """Every parser of the tree that runs a job (has no subcommands of its own)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield parser
        return
    for child in dict.fromkeys(actions[0].choices.values()):
        yield from _leaves(child)


def build_parser():
    """The whole command tree."""
    parser = CommandParser(
        prog="ternary-accel",
        description="Ternary (BitNet b1.58) LLM accelerator: Verilog, synthesis, RTL "
                    "simulation, benchmarks, performance and energy models, checkpoints.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    verilog.add_parser(sub)
    synth.add_parser(sub)
    _add_simple(sub, "sim", sim)
    bench = sub.add_parser("bench", help="benchmarks: area, packing, and layers through "
                                         "the RTL (bit-exact, timed)",
                           description="Benchmarks that print tables; each writes it under "
                                       "--results DIR as well when given.")
    benches = bench.add_subparsers(dest="bench_name", metavar="BENCH", required=True)
    for name, module in BENCHES:
        _add_results_arguments(_add_simple(benches, name, module), f"bench-{name}")
    _add_simple(sub, "dse", dse)
    perf.add_parser(sub)            # perf and schemes
    energy.add_parser(sub)
    model.add_parser(sub)
    _add_simple(sub, "train", train)
    _add_simple(sub, "regmap", regmap)
    _add_simple(sub, "soc-sim", soc)
    _add_simple(sub, "bitstream", bitstream)
    _add_simple(sub, "ip", ip)
    for leaf in _leaves(parser):
        leaf.set_defaults(leaf_parser=leaf)
        # the other table-printing jobs record their tables the same way
        words = leaf.prog.split()[1:]
        if words and words[0] in RECORDED and not any(
                a.dest == "results" for a in leaf._actions):
            _add_results_arguments(leaf, "-".join(words))
    parser.epilog = (f"Jobs: {jobs(parser)}. Run 'ternary-accel COMMAND --help' for a "
                     "command's flags.")
    return parser


def jobs(parser):
    """Every job of the tree in one line: ``verilog, ..., bench area|packing|..., ...``."""
    sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    names = []
    for name, child in sub.choices.items():
        inner = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
        names.append(f"{name} {'|'.join(inner[0].choices)}" if inner else name)
    return ", ".join(names)


#: Commands besides the benches whose tables ``--results`` records.
RECORDED = ("perf", "schemes", "energy")


def _add_results_arguments(parser, name):
    parser.add_argument(
        "--results", type=output_dir, default=None, metavar="DIR",
        help="also write what the command prints to DIR/NAME.md with the command, date "
             "and tool versions (the Makefile passes docs/results)")
    parser.add_argument(
        "--results-name", default=name, metavar="NAME",
        help="file stem under --results (default: %(default)s)")


class _Tee(io.TextIOBase):
    """Standard output, copied."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def _recorded(args, argv):
    """Run a bench and write what it printed under ``--results`` (on success only)."""
    if not args.results_name.replace("-", "_").isidentifier():
        args.leaf_parser.error(f"--results-name must be a plain file stem, not "
                               f"{args.results_name!r}")
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = args.func(args.leaf_parser, args)
    if not status:
        argv = sys.argv[1:] if argv is None else list(argv)
        path = write_results(args.results, args.results_name,
                             args.leaf_parser.prog, tee.copy.getvalue(),
                             argv=argv)
        print(f"results: {path}", file=sys.stderr)
    return status


def main(argv=None):
    """Run ``ternary-accel`` with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 success, 1 the job failed, 2 a usage error.
    """
    from amaranth.hdl import UnusedElaboratable
    with warnings.catch_warnings():
        # Components built only to check or read their parameters are never elaborated,
        # nor those whose constructor refused a value (a usage error); Amaranth's note
        # about them is for library users, not for a command's user. The job and its
        # exceptions end inside this block, so the note is silenced when they are freed.
        warnings.simplefilter("ignore", UnusedElaboratable)
        status = _main(argv)
        gc.collect()
    return status


def _main(argv):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "results", None) is not None:
            status = _recorded(args, argv)
        else:
            status = args.func(args.leaf_parser, args)
    except SystemExit as exit_:          # argparse's usage errors and --help
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print("ternary-accel: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        message = _missing_extra(error)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    except OSError as error:            # a path that cannot be written or read
        where = f"{error.filename}: " if error.filename else ""
        print(f"ternary-accel: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


def run():
    """The console script's entry point."""
    # The process is the command's own: Amaranth's note on components built only to read
    # their parameters stays silent until the interpreter exits, not only inside main().
    from amaranth.hdl import UnusedElaboratable
    warnings.filterwarnings("ignore", category=UnusedElaboratable)
    sys.exit(main())
