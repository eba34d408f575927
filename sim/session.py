"""One simulator process running the layer engine, serving planned layers over a loopback
socket: :class:`EngineSession`, and the one-layer calls :func:`run_on_engine` and
:func:`run_bitlinear`."""

import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

import numpy as np

from ternary_accel.model.bitlinear import bitlinear_fixed

from ternary_accel.sim.build import BENCHES, HARNESS_TOP, MEMORY_BENCH, build_engine
from ternary_accel.sim.config import HarnessConfig
from ternary_accel.hw.params import EngineParams
from ternary_accel.sim.plans import BatchedPlan, plan_layer
from ternary_accel.sim.verilator import retry_text_busy

__all__ = ["SimulatorSession", "EngineResult", "EngineSession", "run_on_engine", "run_bitlinear"]

#: Seconds to wait for the simulator to start and connect, or for one layer's result.
CONNECT_TIMEOUT = 600
RESULT_TIMEOUT = 3600


@dataclass
class EngineResult:
    """What one layer through the RTL gave.

    Attributes
    ----------
    outputs : numpy.ndarray of int64, (T, N_out), or (N_out,) for a 1-D input
        int16 results of the output stage, or raw accumulators.
    cycles : int
        Simulated cycles from the first beat to the last result.
    predicted : int
        The cycle model's count (equal to ``cycles`` when nothing stalls).
    error : int
        The engine's sticky error flags after the layer (bit 0 invalid code, bit 1
        overflow); 0 when all is well.
    wall_seconds : float
        Host time of the call: planning, sending, simulating, receiving.
    timing : dict
        The simulator's seconds by phase: ``simulate`` (the cycles themselves) and,
        for the memory bench, ``load`` (the memories) and ``read`` (the results).
    """

    outputs: np.ndarray
    cycles: int
    predicted: int
    error: int
    wall_seconds: float
    timing: dict = field(default_factory=dict)



class SimulatorSession:
    """A cocotb bench in a simulator process of its own that serves requests from this
    process over a loopback socket: the base of :class:`EngineSession` and
    :class:`sim.token_session.TokenSession`. Use as a context manager.

    The simulator connects back with an authentication key (``TB_SERVER``,
    ``TB_AUTH`` in its environment; :func:`sim.tb.engine.serve_requests` is the bench's
    side) and answers each request (a picklable object) with a dict, or with
    ``{"exception": text}``. A subclass gives :meth:`_launch`: the build and the bench.
    """

    #: What the error messages call the simulation.
    what = "simulator"

    def __init__(self, *, build_root=None, waves=False):
        if not isinstance(waves, bool):
            raise TypeError(f"waves must be True or False, not {waves!r}")
        self.waves = waves
        self.build_root = build_root
        self.build_seconds = None
        self.build_phases = {}
        self.build_dir = None
        self.run_dir = None
        self._conn = None
        self._thread = None
        self._failure = None
        self._failed = False

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def log(self):
        """The simulator's log file (in the session's own run folder)."""
        return self.run_dir / "session.log" if self.run_dir else None

    @property
    def waves_file(self):
        """The waveform dump of a session with ``waves=True`` (None otherwise, or before
        :meth:`start`)."""
        return self.run_dir / "dump.vcd" if self.waves and self.run_dir else None

    def _launch(self):
        """Build (cached) and say what to run: ``(runner, test_module, top, env)``,
        with ``env`` the bench's extra environment; sets :attr:`build_dir`,
        :attr:`build_seconds` and :attr:`build_phases`."""
        raise NotImplementedError

    def start(self):
        """Build (cached) and start the simulator."""
        if self._conn is not None:
            return
        runner, module, top, env = self._launch()
        key = secrets.token_bytes(32)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(1.0)
        host, port = listener.getsockname()
        env = {**env, "TB_SERVER": f"{host}:{port}", "TB_AUTH": key.hex()}
        # Each session runs in a folder of its own inside the build: the memory images
        # it loads, its log and results, so that sessions of one build side by side
        # (two processes, or two pytest workers) never read each other's files.
        self.run_dir = Path(tempfile.mkdtemp(prefix="session-", dir=self.build_dir))
        results = self.run_dir / "session.xml"

        def simulate():
            try:
                retry_text_busy(lambda: runner.test(
                    test_module=module, hdl_toplevel=top,
                    build_dir=self.build_dir, test_dir=self.run_dir,
                    results_xml=str(results), extra_env=env, waves=self.waves,
                    log_file=self.log))
            except SystemExit:
                pass
            except Exception as error:  # reported to the caller by _check_alive
                self._failure = error

        self._thread = threading.Thread(target=simulate, name=f"{self.what}-sim",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                    break
                except socket.timeout:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the simulator did not connect within "
                                           f"{CONNECT_TIMEOUT} s (log: {self.log})") from None
        finally:
            listener.close()
        sock.settimeout(None)
        conn = Connection(sock.detach())
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
        self._conn = conn

    def _check_alive(self):
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError(f"the {self.what} simulator stopped "
                               f"({self._failure or 'exited'}); see {self.log}")

    def _request(self, request, timeout=None):
        """Send ``request`` to the bench and return its reply (a dict).

        Raises
        ------
        RuntimeError
            If the simulator stopped, took longer than ``timeout`` seconds (default
            :data:`RESULT_TIMEOUT`), or the bench raised (the session is then failed:
            its run folder is kept).
        """
        if self._conn is None:
            self.start()
        timeout = RESULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._conn.send(request)
        while not self._conn.poll(1.0):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result within {timeout} s (log: {self.log})")
        reply = self._conn.recv()
        if "exception" in reply:
            self._failed = True
            raise RuntimeError(f"the {self.what} simulation failed: {reply['exception']} "
                               f"(log: {self.log})")
        return reply

    def close(self):
        """Stop the simulator (waits for it to exit)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._thread is not None:
            self._thread.join(timeout=60)
            stopped = not self._thread.is_alive()
            self._thread = None
            # a clean session leaves nothing behind; a failed one keeps its log, a
            # recording one its waveforms
            if (stopped and not self._failed and self._failure is None and self.run_dir
                    and not self.waves):
                shutil.rmtree(self.run_dir, ignore_errors=True)


class EngineSession(SimulatorSession):
    """One simulator process running the layer engine, serving layers one after another.

    The simulator (cocotb under Verilator) connects back to this process over a
    loopback socket with an authentication key; each :meth:`run` sends a planned layer
    and receives its outputs. Use as a context manager.

    Parameters
    ----------
    config : EngineParams
    build_root : path-like, optional
        Folder of the builds (default ``sim`` under :func:`ternary_accel.hw.paths.build_root`); the engine's build
        and the session's logs go to a folder named after the configuration in it.
    idle, backpressure : float
        Probability of an idle cycle on each input stream and of a not-ready cycle on
        the result stream (random stalls; 0 for full speed).
    seed : int
        Seed of the stall patterns.
    bench : str
        ``"memory"`` (the default): the engine inside :class:`sim.harness.EngineHarness`,
        its streams played from memories by the simulator itself (:mod:`sim.tb_harness`),
        stalls from LFSRs; or ``"cycle"``: every handshake driven and sampled from
        Python each cycle (:mod:`sim.tb_engine`), stalls from NumPy, about 30 times
        slower. Both give the same outputs, and the same cycles without stalls.
    harness : HarnessConfig, optional
        The memories of the ``"memory"`` bench (default :class:`HarnessConfig`).
    waves : bool
        Record every signal of the design (Verilator's tracing, a build of its own) to
        :attr:`waves_file`, a VCD in the session's run folder, which is kept when the
        session closes. Slows the simulation several times; for debugging.
    """

    what = "engine"

    def __init__(self, config=None, *, build_root=None, idle=0.0, backpressure=0.0,
                 seed=1, bench=MEMORY_BENCH, harness=None, waves=False):
        super().__init__(build_root=build_root, waves=waves)
        self.config = EngineParams() if config is None else config
        for name, value in (("idle", idle), ("backpressure", backpressure)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
        if bench not in BENCHES:
            raise ValueError(f"bench must be one of {', '.join(BENCHES)}, not {bench!r}")
        if harness is not None and bench != MEMORY_BENCH:
            raise ValueError("a HarnessConfig goes with bench='memory'")
        self.bench = bench
        self.harness = (harness or HarnessConfig()) if bench == MEMORY_BENCH else None
        self.traffic = {"idle": idle, "backpressure": backpressure, "seed": seed}
        self._jobs = 0

    def _launch(self):
        runner, self.build_dir, self.build_seconds, self.build_phases = build_engine(
            self.config, self.build_root, bench=self.bench, harness=self.harness,
            waves=self.waves)
        module, top = (("ternary_accel.sim.tb.harness", HARNESS_TOP) if self.bench == MEMORY_BENCH
                       else ("ternary_accel.sim.tb.engine", "layer_engine"))
        return runner, module, top, {"TB_ENGINE": json.dumps(asdict(self.config))}

    def run(self, weights, activations, scale=None, shift=None):
        """Run one quantized layer through the engine; see :func:`check_layer_inputs`
        for the arguments and their checks.

        Returns
        -------
        EngineResult
        """
        single = np.ndim(activations) == 1
        result = self.run_plan(plan_layer(weights, activations, scale, shift, self.config))
        if single:
            result.outputs = result.outputs[0]
        return result

    def run_plan(self, plan):
        """Run a planned layer (:func:`plan_layer`, :func:`sim.sparse.plan_sparse`).

        Returns
        -------
        EngineResult
            Outputs (tokens, out_features).
        """
        if isinstance(plan, BatchedPlan):
            started = time.monotonic()
            results = [self.run_plan(run) for run in plan.runs]
            return EngineResult(np.concatenate([r.outputs for r in results]),
                                sum(r.cycles for r in results), plan.mapping.cycles,
                                int(np.bitwise_or.reduce([r.error for r in results])),
                                time.monotonic() - started,
                                {key: sum(r.timing.get(key, 0.0) for r in results)
                                 for key in results[0].timing})
        if self.harness is not None:
            self.harness.check(plan)
        if getattr(plan, "batch_size", None) is not None and self.bench != MEMORY_BENCH:
            raise ValueError("the cycle bench drives act and wgt in lockstep: an engine "
                             "with weight reuse or a weight port runs on bench='memory'")
        if self._conn is None:
            self.start()
        started = time.monotonic()
        self._jobs += 1
        reply = self._request({"plan": plan, "traffic": {
            **self.traffic, "seed": self.traffic["seed"] + self._jobs}})
        outputs = (plan.order_outputs(reply["outputs"]) if hasattr(plan, "order_outputs")
                   else reply["outputs"].reshape(plan.tokens, plan.out_features))
        return EngineResult(outputs, reply["cycles"],
                            plan.mapping.cycles, reply["error"], time.monotonic() - started,
                            reply["timing"])


def run_on_engine(weights, activations, *, scale=None, shift=None, config=None,
                  build_root=None, idle=0.0, backpressure=0.0, seed=1, bench=MEMORY_BENCH,
                  waves=False):
    """Run one quantized layer on the engine's RTL and return its outputs.

    With ``config.output_stage`` (the default engine) pass the per-token ``scale`` and
    ``shift`` and get the int16 results; with ``EngineParams(output_stage=False)`` get
    the raw accumulators. A 1-D activation vector is one token.

    Returns
    -------
    EngineResult
    """
    with EngineSession(config, build_root=build_root, idle=idle, backpressure=backpressure,
                       seed=seed, bench=bench, waves=waves) as session:
        return session.run(weights, activations, scale, shift)


def run_bitlinear(result, *, frac_bits=None, config=None, **kwargs):
    """Run a :class:`model.bitlinear.BitLinearResult` on the engine: through the output
    stage with ``frac_bits`` fractional output bits (the engine ``config`` must have
    it), or as raw accumulators when ``frac_bits`` is None."""
    if frac_bits is None:
        config = config or EngineParams(output_stage=False)
        return run_on_engine(result.weights, result.activations, config=config, **kwargs)
    fixed = bitlinear_fixed(result, frac_bits)
    return run_on_engine(result.weights, result.activations, scale=fixed["scale"],
                         shift=fixed["shift"], config=config, **kwargs)


