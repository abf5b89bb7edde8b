"""Resource samples of a SLURM pilot's nodes, for `rhapsody.telemetry`.

One `srun --overlap` step of the pilot's own job runs `rhapsody.telemetry.node_sampler` once on
each of its nodes, and the samples come back through files in a directory under the backend's
work directory, which the nodes share with this host (as for services). `--overlap` lets the
step share the CPUs and memory of the tasks' steps without taking any: RADICAL-Pilot's
scheduler never sees it, so it delays no task and holds no core a whole-node task needs. (A
sampler as a RADICAL-Pilot task would hold one core per node for the whole run.)

Other pilots get no rows here: a local pilot runs on the client's node, which telemetry samples
itself; for PBS, LSF or a sandbox this host cannot read, `start` says why not.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from rhapsody.telemetry.node_sampler import SampleFiles

logger = logging.getLogger(__name__)

# Seconds between two samples on a node (the reader gets the latest at each telemetry round).
INTERVAL = 1.0
_STOP_TIMEOUT = 5.0


class PilotSampler:
    """The sampling step of one pilot (see the module's doc): `start` once, `read` each round,
    `stop` before the pilot closes."""

    def __init__(self, sandbox: str | None, sid: str, directory: Path) -> None:
        self.sandbox = sandbox  # the pilot's sandbox, when it is a local path
        self.sid = sid
        self.directory = directory
        self._files = SampleFiles(directory)
        self._step: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._ended_reported = False
        self._any = False  # a row ever came back

    def start(self) -> str | None:
        """Start the step; None once started, else why it cannot be."""
        job = _slurm_job(self.sandbox)
        if job is None:
            return "the pilot is not a SLURM job whose sandbox this host can read"
        srun = shutil.which("srun")
        if srun is None:
            return "no srun on this host's PATH"
        job_id, nodes = job
        self.directory.mkdir(parents=True, exist_ok=True)
        # Marked with the session id: its cleanup (and the watchdog, if this process dies)
        # stops the step with the rest of the session. SLURM_* variables of a job this client
        # may itself run in would override the pilot job's (SLURM_CONF names the cluster).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        if "SLURM_CONF" in os.environ:
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        env["RP_SESSION_ID"] = self.sid
        command = [
            srun,
            f"--jobid={job_id}",
            "--overlap",
            f"--nodes={nodes}",
            f"--ntasks={nodes}",
            "--ntasks-per-node=1",
            "--job-name=rhapsody-node-sampler",
            "--quiet",
            sys.executable,
            "-m",
            "rhapsody.telemetry.node_sampler",
            "--dir",
            str(self.directory),
            "--interval",
            str(INTERVAL),
        ]
        self._errors = (self.directory / "srun.err").open("wb")
        self._step = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            start_new_session=True,
        )
        return None

    def read(self) -> list[dict[str, Any]]:
        """The nodes' rows written since the previous read."""
        rows = self._files.read()
        self._any = self._any or bool(rows)
        step = self._step
        if step is not None and step.poll() is not None and not self._ended_reported:
            self._ended_reported = True
            # a sampler that finds no directory exits at once
            unshared = "" if self._any else f"; is {self.directory} shared with the nodes?"
            logger.warning(
                "the pilot's node sampling step ended (exit %s%s): %s",
                step.returncode,
                unshared,
                _tail(self.directory / "srun.err") or "no error output",
            )
        return rows

    def stop(self) -> None:
        """Stop the step (srun passes SIGTERM to every node's sampler) and remove the files."""
        step, self._step = self._step, None
        if step is not None and step.poll() is None:
            step.terminate()
            try:
                step.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                step.kill()
                step.wait()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _slurm_job(sandbox: str | None) -> tuple[str, int] | None:
    """The pilot's SLURM job id and node count, from the environment its bootstrap recorded
    (RADICAL-Pilot's client is not told the job id); None for a pilot that is not a SLURM job."""
    if sandbox is None:
        return None
    try:
        lines = (Path(sandbox) / "env" / "bs0_orig.env").read_text().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        name, _, value = line.partition("=")
        if name in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES"):
            found[name] = value.strip("'\"")
    if "SLURM_JOB_ID" not in found or not found.get("SLURM_JOB_NUM_NODES", "").isdigit():
        return None
    return found["SLURM_JOB_ID"], int(found["SLURM_JOB_NUM_NODES"])


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""
