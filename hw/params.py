"""The design parameters of the accelerator, each declared, defaulted and checked once.

:class:`UnitParams` is one matmul unit (:class:`ternary_accel.hw.rtl.matmul.MatmulUnit`);
:class:`EngineParams` is one layer engine (:class:`ternary_accel.hw.rtl.engine.LayerEngine`):
its unit's parameters and the engine's own. Each object owns its defaults, its checks
(on construction: a bad value raises ``TypeError`` or ``ValueError`` naming the
parameter), the widths and latencies derived from it, the name of its build folders and
reports, its JSON form (the sidecar of the generated Verilog and the simulator's
configuration), and its command-line flags (:meth:`UnitParams.add_arguments`,
:meth:`UnitParams.from_args`, whose errors name the flag). The RTL, the cycle model, the
simulator's builds, the synthesis flow, the design-space exploration and the CLI all
take these objects: a parameter added later is added here.

Plain Python: importing this module does not import Amaranth.
"""

import argparse
import json
import re
from dataclasses import asdict, dataclass, fields, replace

from ternary_accel.model.arith import acc_width, act_range
from ternary_accel.model.arith import check_act_width as check_act_width_value
from ternary_accel.model.encoding import BASE3, PACKINGS, check_packing
from ternary_accel.model.quant import ACT_WIDTH, ACT_WIDTHS, HW_WEIGHT_MODES, INT8, TERNARY

from ternary_accel.hw.mapping import (DEFAULT_LANES, DEFAULT_ROWS, COLUMNS_ORDER, ROWS_ORDER, WEIGHT_ORDERS, default_packing,
                                      port_words_per_beat, weight_beat_bytes)
from ternary_accel.hw.timing import LayerMapping, output_interval, result_width, unit_latency

__all__ = ["UnitParams", "EngineParams", "ParamsError", "BITNET_ENGINE",
           "check_positive_int", "check_bool", "check_weight_mode", "check_fabric",
           "check_act_width", "check_act_copies", "check_output_rows", "check_weight_order",
           "GENERIC", "ECP5", "FABRICS", "ROWS_ORDER", "COLUMNS_ORDER", "WEIGHT_ORDERS",
           "MAX_TOKENS", "MAX_LANES", "MAX_ROWS", "MAX_BEATS", "MAX_PORT_BITS",
           "default_packing", "flag_of", "flagged"]

#: Fabrics a lane group can be built for: portable Verilog, or Lattice ECP5 carry cells.
GENERIC = "generic"
ECP5 = "ecp5"
FABRICS = (GENERIC, ECP5)

#: Bounds of the design sizes: far beyond any design the flows here can build, and small
#: enough that a mistyped size is an error rather than an elaboration of billions of
#: bits that never ends.
MAX_LANES = MAX_ROWS = 4096
MAX_BEATS = 1 << 24
MAX_PORT_BITS = 1 << 16
#: The most tokens that may share a weight beat (``EngineParams.tokens``).
MAX_TOKENS = 256


class ParamsError(ValueError):
    """A parameter out of range, or two that do not combine; ``parameter`` names the
    first one at fault (its flag is derived from it)."""

    def __init__(self, parameter, message):
        super().__init__(message)
        self.parameter = parameter


# Checks of single values, shared by the parameter objects and the components' helpers.

def check_positive_int(name, value, *, minimum=1, maximum=None):
    """Return ``value`` if it is an ``int`` >= ``minimum`` (and <= ``maximum``).

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` is refused too).
    ValueError
        If ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if value < minimum:
        raise ParamsError(name, f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ParamsError(name, f"{name} must be at most {maximum}, not {value}")
    return value


def check_bool(name, value):
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _check_choice(name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    if value not in choices:
        raise ParamsError(name, f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def check_weight_mode(value):
    """Return ``value`` if it names a hardware weight mode of :mod:`model.quant`."""
    return _check_choice("weight_mode", value, HW_WEIGHT_MODES)


def check_fabric(value):
    """Return ``value`` if it names one of :data:`FABRICS`."""
    return _check_choice("fabric", value, FABRICS)


def check_weight_order(value):
    """Return ``value`` if it names one of :data:`WEIGHT_ORDERS`."""
    return _check_choice("weight_order", value, WEIGHT_ORDERS)


def check_act_width(value, weight_mode):
    """Return ``value`` if it is an activation width (:data:`model.quant.ACT_WIDTHS`)
    that ``weight_mode`` is built for: ternary and binary lanes take 4 or 8, the int8
    multiplier baseline only 8 (it is the int8 x int8 comparison point)."""
    try:
        value = check_act_width_value(value)
    except ValueError as error:
        raise ParamsError("act_width", str(error)) from None
    if weight_mode == INT8 and value != ACT_WIDTH:
        raise ParamsError("act_width", f"act_width {value} is for ternary and binary "
                          f"weights; the int8 baseline multiplies int8 x int8 "
                          f"(act_width {ACT_WIDTH})")
    return value


def check_act_copies(value, rows):
    """Return ``value`` (``None``, or 1 to ``rows`` copies of the activation register)."""
    if value is None:
        return None
    check_positive_int("act_copies", value)
    if value > rows:
        raise ParamsError("act_copies", f"act_copies must be at most rows ({rows}), "
                          f"not {value}")
    return value


def check_output_rows(value, rows, output_stage):
    """Return ``value`` (``None``, or a divisor of ``rows`` with the output stage)."""
    if value is None:
        return None
    check_positive_int("output_rows", value)
    if not output_stage:
        raise ParamsError("output_rows", "output_rows is a parameter of the output stage "
                          "(output_stage=True)")
    if rows % value:
        raise ParamsError("output_rows", f"output_rows must divide rows ({rows}), "
                          f"not {value}")
    return value


def _optional(check, name, value):
    return None if value is None else check(name, value)


#: How each parameter is spelled on the command line, where it is not ``--name-with-dashes``.
_FLAGS = {"lanes": "--lanes", "rows": "--rows", "tokens": "--tokens",
          "weight_port_bits": "--weight-port-bits"}


def flag_of(parameter):
    """The command-line flag of ``parameter`` (``output_rows`` -> ``--output-rows``)."""
    return _FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


class _Params:
    """What both parameter objects share: JSON, flags, replacement."""

    def to_dict(self):
        """The parameters as a plain ``dict`` (the JSON sidecar's ``config``)."""
        return asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """The parameters of ``d`` (:meth:`to_dict`); unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} parameter {unknown[0]!r}")
        return cls(**d)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def replace(self, **changes):
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)

    @classmethod
    def from_args(cls, parser, args, **fixed):
        """The parameters given by ``args`` (from :meth:`add_arguments`), with ``fixed``
        ones on top; an invalid value or combination is ``parser.error`` naming the
        flag (exit status 2)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values.update(fixed)
        try:
            return cls(**values)
        except ParamsError as error:
            parser.error(flagged(str(error)))
        except (TypeError, ValueError) as error:
            parser.error(str(error))


def flagged(message, flags=None):
    """``message`` with parameter names spelled as command-line flags (``tokens`` ->
    ``--tokens``, ``output_stage=True`` -> ``--output-stage``); ``flags`` maps a
    parameter to a command's own flag where it differs (``{"tokens": "--reuse"}``)."""
    flags = flags or {}
    message = re.sub(r"\boutput_stage=True\b", flags.get("output_stage", "--output-stage"),
                     message)
    names = {f.name for cls in (UnitParams, EngineParams) for f in fields(cls)}
    return re.sub(r"(?<![-\w])(%s)\b(?!=)" % "|".join(sorted(names, key=len, reverse=True)),
                  lambda m: flags.get(m.group(1), flag_of(m.group(1))), message)


def _copies(text):
    """``--act-copies`` value: a count, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid count: {text!r} (an integer or 'none')") from None


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


@dataclass(frozen=True)
class UnitParams(_Params):
    """Parameters of one matmul unit.

    Parameters
    ----------
    lanes : int
        K, activations per beat (one dot-product lane each per row).
    rows : int
        M, output rows, one lane group each, sharing the activation beat.
    weight_mode : str
        ``"ternary"``, ``"binary"``, or ``"int8"`` (the multiplier baseline).
    output_stage : bool
        Rescale each accumulator to int16 in the fixed-point output stage
        (:func:`ternary_accel.model.arith.round_fixed`); else the raw accumulators.
    max_beats : int
        The longest dot product, in beats; sizes the accumulators.
    levels_per_stage : int
        Adder-tree levels between two pipeline registers.
    fabric : str
        ``"generic"`` Verilog, or ``"ecp5"`` lane groups of Lattice carry cells and
        ``MULT18X18D`` blocks in the pipelined output stage.
    act_width : int
        Bits of an activation: 8, or 4 (BitNet a4.8's int4 inputs, two per byte).
    acc_tiles : int or None
        An accumulator bank of that many row tiles (the sparse dataflow and weight reuse);
        None: one accumulator per row.
    output_rows : int or None
        With the output stage: the pipelined stage, that many rows a cycle (a divisor of
        ``rows``; fewer than ``rows`` share one stage behind a queue). None: the
        two-register stage.
    act_copies : int or None
        Register the beat in front of the lane groups, the activations in that many
        copies (each feeding ``rows / act_copies`` rows); None: no input register.

    Raises
    ------
    TypeError, ValueError
        A value of the wrong type or out of range, naming the parameter.
    """

    lanes: int = 16
    rows: int = 8
    weight_mode: str = TERNARY
    output_stage: bool = False
    max_beats: int = 1024
    levels_per_stage: int = 1
    fabric: str = GENERIC
    act_width: int = ACT_WIDTH
    acc_tiles: int = None
    output_rows: int = None
    act_copies: int = None

    def __post_init__(self):
        check_positive_int("lanes", self.lanes, maximum=MAX_LANES)
        check_positive_int("rows", self.rows, maximum=MAX_ROWS)
        check_weight_mode(self.weight_mode)
        check_bool("output_stage", self.output_stage)
        check_positive_int("max_beats", self.max_beats, maximum=MAX_BEATS)
        check_positive_int("levels_per_stage", self.levels_per_stage)
        check_fabric(self.fabric)
        check_act_width(self.act_width, self.weight_mode)
        _optional(check_positive_int, "acc_tiles", self.acc_tiles)
        check_output_rows(self.output_rows, self.rows, self.output_stage)
        check_act_copies(self.act_copies, self.rows)

    # Derived widths and timing.

    @property
    def macs(self):
        """Multiply-accumulates per cycle: ``lanes * rows``."""
        return self.lanes * self.rows

    @property
    def acc_width(self):
        """Bits of an accumulator: the longest dot product's range."""
        return acc_width(self.lanes * self.max_beats, self.weight_mode, self.act_width)

    @property
    def act_range(self):
        """``(min, max)`` of one activation: -128..127, or -8..7 for int4."""
        return act_range(self.act_width)

    @property
    def res_width(self):
        """Bits of one result: 16 with the output stage, else :attr:`acc_width`."""
        return result_width(self.lanes, self.max_beats, self.output_stage,
                            self.weight_mode, self.act_width)

    @property
    def stage_rows(self):
        """Rows a cycle of the pipelined output stage (None: none, or not pipelined)."""
        return self.output_rows if self.output_stage else None

    @property
    def latency(self):
        """L of the timing contract: cycles from a ``last`` beat's transfer to its result
        vector on ``res`` (:func:`ternary_accel.hw.timing.unit_latency`)."""
        return unit_latency(self.lanes, self.levels_per_stage, self.output_stage,
                            self.output_rows, self.rows, act_copies=self.act_copies)

    @property
    def output_interval(self):
        """R, cycles per result vector in the output stage."""
        return output_interval(self.rows, self.output_rows)

    # Names.

    @property
    def name(self):
        """The build folder's name: every parameter, e.g. ``k16_m8_ternary_raw_b8_l1``."""
        stage = "os" if self.output_stage else "raw"
        if self.output_rows is not None:
            stage += f"{self.output_rows}"
        fabric = "" if self.fabric == GENERIC else f"_{self.fabric}"
        acts = "" if self.act_width == ACT_WIDTH else f"_a{self.act_width}"
        tiles = "" if self.acc_tiles is None else f"_t{self.acc_tiles}"
        copies = "" if self.act_copies is None else f"_c{self.act_copies}"
        return (f"k{self.lanes}_m{self.rows}_{self.weight_mode}_{stage}"
                f"_b{self.max_beats}_l{self.levels_per_stage}{fabric}{acts}{tiles}{copies}")

    @property
    def report_name(self):
        """The name of the unit in synthesis reports and tables, e.g.
        ``unit8x16_ternary_os``: rows x lanes, the weight mode, then
        :attr:`act_width_suffix` and :attr:`variant_suffix`."""
        return (f"unit{self.rows}x{self.lanes}_{self.weight_mode}{self.act_width_suffix}"
                f"{self.variant_suffix}")

    @property
    def act_width_suffix(self):
        """``""`` for int8 activations, ``"_a4"`` for int4 (report names)."""
        return "" if self.act_width == ACT_WIDTH else f"_a{self.act_width}"

    @property
    def variant_suffix(self):
        """Report-name suffix of the pipeline away from its defaults: ``_os`` (the
        output stage), ``_oR`` (its rows a cycle), ``_acN`` (activation copies)."""
        suffix = "_os" if self.output_stage else ""
        if self.output_rows is not None:
            suffix += f"_o{self.output_rows}"
        if self.act_copies is not None:
            suffix += f"_ac{self.act_copies}"
        return suffix

    # Command line.

    @classmethod
    def add_arguments(cls, parser, *, engine=False, defaults=None):
        """Add the flags of these parameters to ``parser`` (``engine=True``: without
        ``--weight-mode`` and ``--acc-tiles``, which an engine sets itself);
        ``defaults`` (name -> value) replaces some of the class's defaults (an engine's
        own)."""
        d = {f.name: f.default for f in fields(cls)}
        d.update(defaults or {})
        parser.add_argument("--lanes", "-k", type=_int, default=d["lanes"], metavar="K",
                            help="activations per beat (default: %(default)s)")
        parser.add_argument("--rows", "-m", type=_int, default=d["rows"], metavar="M",
                            help="output rows (default: %(default)s)")
        if not engine:
            parser.add_argument("--weight-mode", choices=HW_WEIGHT_MODES,
                                default=d["weight_mode"],
                                help="weight encoding (default: %(default)s; int8 is the "
                                     "multiplier baseline)")
        parser.add_argument("--output-stage", action=argparse.BooleanOptionalAction,
                            default=d["output_stage"],
                            help="fixed-point rescale of the accumulators (default: "
                                 f"{'on' if d['output_stage'] else 'off'})")
        parser.add_argument("--max-beats", type=_int, default=d["max_beats"], metavar="N",
                            help="longest dot product in beats; sizes the accumulators "
                                 "(default: %(default)s)")
        parser.add_argument("--levels-per-stage", type=_int, default=d["levels_per_stage"],
                            metavar="L",
                            help="adder-tree levels per pipeline register "
                                 "(default: %(default)s)")
        parser.add_argument("--fabric", choices=FABRICS, default=d["fabric"],
                            help="generic Verilog, or lane groups built from Lattice ECP5 "
                                 "CCU2C carry cells (needs the Lattice cell library; "
                                 "default: %(default)s)")
        parser.add_argument("--act-width", type=_int, choices=ACT_WIDTHS,
                            default=d["act_width"],
                            metavar="{" + ",".join(map(str, ACT_WIDTHS)) + "}",
                            help="bits of an activation: 8, or 4 for BitNet a4.8's int4 "
                                 "inputs (two per byte; ternary and binary weights; "
                                 "default: %(default)s)")
        parser.add_argument("--output-rows", type=_int, default=d["output_rows"], metavar="R",
                            help="with the output stage: the pipelined stage (DSP multiply "
                                 "with --fabric ecp5), R rows a cycle; below --rows one "
                                 "stage is shared by the rows, a result vector every "
                                 "rows / R cycles (default: the two-register stage)")
        parser.add_argument("--act-copies", type=_copies, default=d["act_copies"],
                            metavar="N",
                            help="register the beat once in front of the lane groups, the "
                                 "activations in N copies (each feeding rows / N rows); "
                                 "'none' for no input register (default: none)")


@dataclass(frozen=True)
class EngineParams(_Params):
    """Parameters of one layer engine: its matmul unit's (ternary weights; the
    accumulator bank is the engine's to set) and its own.

    Parameters
    ----------
    lanes, rows, max_beats, output_stage
        As :class:`UnitParams`; the defaults are the engine of the BitNet b1.58 2B4T
        figures (:data:`BITNET_ENGINE`): 32 lanes, 16 rows, dot products up to 256 beats
        (the widest projection, 6912 inputs, is 216), the output stage on (without it
        the engine returns the exact accumulators).
    levels_per_stage, fabric, act_width, output_rows, act_copies
        As :class:`UnitParams`, with the same defaults.
    weight_order : str
        ``"rows"``: weight beats packed row-major (the dense dataflow); ``"columns"``:
        ``lanes`` stored columns a beat (the sparse dataflow of
        :mod:`ternary_accel.model.sparse`).
    acc_tiles : int or None
        The sparse dataflow's accumulator bank of that many row tiles.
    tokens : int
        T, weight reuse: each weight beat applied to up to T tokens (1..256).
    weight_port_bits : int or None
        Width of the weight memory port (a multiple of 8); None: a whole beat a cycle.
    packing : str or None
        Packing of the port's words (:data:`ternary_accel.model.encoding.PACKINGS`);
        None: ``3in5`` with a port or weight reuse, else ``base3``.

    Raises
    ------
    TypeError, ValueError
        A value of the wrong type or out of range, or parameters that do not combine,
        naming the parameter.
    """

    lanes: int = DEFAULT_LANES
    rows: int = DEFAULT_ROWS
    max_beats: int = 256
    levels_per_stage: int = UnitParams.levels_per_stage
    output_stage: bool = True
    weight_order: str = ROWS_ORDER
    act_width: int = UnitParams.act_width
    acc_tiles: int = None
    tokens: int = 1
    weight_port_bits: int = None
    packing: str = None
    output_rows: int = UnitParams.output_rows
    act_copies: int = UnitParams.act_copies
    fabric: str = UnitParams.fabric

    def __post_init__(self):
        check_weight_order(self.weight_order)
        check_positive_int("tokens", self.tokens)
        if self.tokens > MAX_TOKENS:
            raise ParamsError("tokens", f"tokens must be at most {MAX_TOKENS}, "
                              f"not {self.tokens}")
        _optional(check_positive_int, "acc_tiles", self.acc_tiles)
        self.unit                                   # the unit's own checks
        if self.packing is not None:
            try:
                check_packing(self.packing)
            except ValueError as error:
                raise ParamsError("packing", str(error)) from None
        if self.weight_port_bits is not None:
            check_positive_int("weight_port_bits", self.weight_port_bits,
                               maximum=MAX_PORT_BITS)
            try:
                port_words_per_beat(1, self.effective_packing, self.weight_port_bits)
            except ValueError as error:
                # hw.mapping calls it port_bits
                raise ParamsError("weight_port_bits", re.sub(
                    r"(?<!_)\bport_bits\b", "weight_port_bits", str(error))) from None
        if self.assembled:
            if self.weight_order != ROWS_ORDER:
                raise ParamsError("weight_order", "weight_order='columns' (the sparse "
                                  "dataflow) takes whole beats: no tokens > 1 or "
                                  "weight_port_bits")
            if self.acc_tiles is not None:
                raise ParamsError("acc_tiles", "acc_tiles (the sparse dataflow's bank) and "
                                  "tokens > 1 or weight_port_bits do not combine: the bank "
                                  "holds the batch's tokens")
        elif self.effective_packing != BASE3:
            raise ParamsError("packing", f"packing {self.packing!r} needs assembled beats: "
                              f"give weight_port_bits (or tokens > 1)")
        if (self.weight_order != ROWS_ORDER and self.output_stage
                and self.output_rows is not None and self.output_rows < self.rows):
            raise ParamsError("output_rows", "the sparse dataflow (weight_order='columns') "
                              "takes a parallel output stage: output_rows must be None or "
                              "rows")

    @property
    def unit(self):
        """The :class:`UnitParams` of the engine's matmul unit: ternary weights, and the
        accumulator bank the engine needs (the batch's tokens, or ``acc_tiles``)."""
        return UnitParams(lanes=self.lanes, rows=self.rows, weight_mode=TERNARY,
                          output_stage=self.output_stage, max_beats=self.max_beats,
                          levels_per_stage=self.levels_per_stage, fabric=self.fabric,
                          act_width=self.act_width,
                          acc_tiles=self.tokens if self.tokens > 1 else self.acc_tiles,
                          output_rows=self.output_rows, act_copies=self.act_copies)

    @property
    def assembled(self):
        """Beats assembled from port words (weight reuse or a port width)."""
        return self.tokens > 1 or self.weight_port_bits is not None

    @property
    def effective_packing(self):
        """The packing in use: :attr:`packing`, or its default."""
        return self.packing if self.packing is not None else default_packing(self.assembled)

    @property
    def bytes_per_beat(self):
        """Packed bytes of one whole weight beat."""
        return weight_beat_bytes(self.lanes, self.rows, self.weight_order)

    @property
    def wgt_word_bytes(self):
        """Bytes of one word of the engine's ``wgt`` stream: a whole beat, or a port
        word."""
        if not self.assembled:
            return self.bytes_per_beat
        return self.mapping(self.rows, self.lanes).port_bits_used // 8

    @property
    def latency(self):
        return self.unit.latency

    @property
    def res_width(self):
        return self.unit.res_width

    def mapping(self, out_features, in_features, tokens=1):
        """The cycle model of a layer on this engine
        (:class:`ternary_accel.hw.timing.LayerMapping`)."""
        return LayerMapping(out_features, in_features, tokens, self.lanes, self.rows,
                            self.levels_per_stage, self.output_stage, self.max_beats,
                            batch=self.tokens, port_bits=self.weight_port_bits,
                            packing=self.packing, output_rows=self.output_rows,
                            act_copies=self.act_copies)

    @property
    def name(self):
        """The build folder's name, e.g. ``engine_k32_m16_b256_l1``."""
        stage = "" if self.output_stage else "_acc"
        order = "" if self.weight_order == ROWS_ORDER else f"_{self.weight_order}"
        bank = "" if self.acc_tiles is None else f"_t{self.acc_tiles}"
        reuse = "" if self.tokens == 1 else f"_T{self.tokens}"
        port = "" if self.weight_port_bits is None else f"_p{self.weight_port_bits}"
        packing = "" if self.packing is None else f"_{self.packing}"
        return (f"engine_k{self.lanes}_m{self.rows}_b{self.max_beats}"
                f"_l{self.levels_per_stage}{stage}{order}{bank}"
                f"{'' if self.act_width == ACT_WIDTH else f'_a{self.act_width}'}"
                f"{reuse}{port}{packing}"
                f"{'' if self.output_rows is None else f'_o{self.output_rows}'}"
                f"{'' if self.act_copies is None else f'_c{self.act_copies}'}")

    @property
    def report_name(self):
        """The name of the engine in synthesis reports and tables, e.g.
        ``engine16x32_T16_p128_3in5_os_o1``: rows x lanes, :attr:`engine_suffix`, then the
        unit's activation width and pipeline suffixes."""
        unit = self.unit
        return (f"engine{self.rows}x{self.lanes}{self.engine_suffix}"
                f"{unit.act_width_suffix}{unit.variant_suffix}")

    @property
    def engine_suffix(self):
        """Report-name suffix of the engine-only parameters: ``_columns``, ``_tN``
        (bank), ``_TN`` (reuse), ``_pBITS`` (port), ``_PACKING``."""
        return (("" if self.weight_order == ROWS_ORDER else f"_{self.weight_order}") +
                ("" if self.acc_tiles is None else f"_t{self.acc_tiles}") +
                ("" if self.tokens == 1 else f"_T{self.tokens}") +
                ("" if self.weight_port_bits is None else f"_p{self.weight_port_bits}") +
                ("" if self.packing is None else f"_{self.packing}"))

    @classmethod
    def add_arguments(cls, parser):
        """Add the unit's flags (with the engine's defaults) and the engine's own to
        ``parser``."""
        units = {f.name for f in fields(UnitParams)}
        UnitParams.add_arguments(parser, engine=True,
                                 defaults={f.name: f.default for f in fields(cls)
                                           if f.name in units})
        cls.add_engine_arguments(parser)

    @classmethod
    def add_engine_arguments(cls, parser, *, prefix="with --engine: "):
        """Add only the engine's own flags."""
        d = {f.name: f.default for f in fields(cls)}
        parser.add_argument("--weight-order", choices=WEIGHT_ORDERS, default=d["weight_order"],
                            help=f"{prefix}weight beats packed row-major (the dense "
                                 "dataflow) or as stored columns (the sparse dataflow; "
                                 "default: %(default)s)")
        parser.add_argument("--acc-tiles", type=_int, default=d["acc_tiles"], metavar="N",
                            help=f"{prefix}an accumulator bank of N row tiles (the sparse "
                                 "dataflow's beat-major order; default: none)")
        parser.add_argument("--tokens", type=_int, default=d["tokens"], metavar="T",
                            help=f"{prefix}weight reuse, each weight beat applied to up to "
                                 f"T tokens (at most {MAX_TOKENS}; default: %(default)s)")
        parser.add_argument("--weight-port-bits", type=_int, default=d["weight_port_bits"],
                            metavar="BITS",
                            help=f"{prefix}width of the weight memory port, e.g. 64, 128, "
                                 "256 (default: a whole beat per cycle)")
        parser.add_argument("--packing", choices=PACKINGS, default=d["packing"],
                            help=f"{prefix}packing of the weight port's words (default: "
                                 "3in5 with --tokens > 1 or --weight-port-bits, else base3)")

    @classmethod
    def engine_only_given(cls, args):
        """Whether ``args`` set any engine-only flag away from its default."""
        return any(getattr(args, f.name, f.default) != f.default for f in fields(cls)
                   if f.name in ("weight_order", "acc_tiles", "tokens", "weight_port_bits",
                                 "packing"))


#: The engine the BitNet b1.58 2B4T figures are reported for: the defaults of
#: :class:`EngineParams`.
BITNET_ENGINE = EngineParams()
