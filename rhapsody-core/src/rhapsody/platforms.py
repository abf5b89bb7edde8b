"""HPC platforms: what a machine offers (`PlatformDescription`) and what this job got (`detect`).

Descriptions of real systems live in the separately installed catalog (`pip install
rhapsody-platforms`), registered through the `rhapsody_register_platforms` hook. They are
reachable as attributes of this module::

    from rhapsody.platforms import frontera, PlatformDescription, ResourceManager
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from rhapsody import hostlist
from rhapsody.errors import RhapsodyError
from rhapsody.plugins import OFFICIAL_PLATFORM_CATALOG, get_plugin_manager
from rhapsody.resources import detect_cores, detect_gpus

__all__ = [
    "DetectedAllocation",
    "LaunchMethod",
    "PlatformDescription",
    "PlatformError",
    "PlatformNotFoundError",
    "ResourceManager",
    "detect",
    "get_platform",
    "list_platforms",
]


class PlatformError(RhapsodyError, ValueError):
    """A platform description, or the allocation's environment, holds a value we cannot use."""


class PlatformNotFoundError(RhapsodyError, ImportError):
    """No platform is registered under that name.

    An ImportError, so that `from rhapsody.platforms import frontera` shows this message (Python
    replaces an AttributeError raised there with a bare "cannot import name").
    """


_E = TypeVar("_E", bound="_ParsedEnum")
_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class _ParsedEnum(str, enum.Enum):
    """A string enum read case-insensitively from its value or its name."""

    @classmethod
    def parse(cls: type[_E], value: object, field: str) -> _E:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if value.strip().lower() in (member.value, member.name.lower()):
                    return member
        known = ", ".join(member.value for member in cls)
        raise PlatformError(f"{field} must be one of {known}; got {value!r}")


class ResourceManager(_ParsedEnum):
    """The batch system that grants the allocation."""

    SLURM = "slurm"
    PBS = "pbs"
    LSF = "lsf"
    FLUX = "flux"
    LOCAL = "local"


class LaunchMethod(_ParsedEnum):
    """The command that starts a (possibly MPI) task on the allocation's nodes."""

    SRUN = "srun"
    IBRUN = "ibrun"  # TACC's wrapper around its MPI launchers
    MPIEXEC = "mpiexec"
    MPIRUN = "mpirun"
    JSRUN = "jsrun"
    FLUX = "flux"  # `flux run`
    FORK = "fork"  # plain child processes on the local node


_DEFAULT_LAUNCH = {
    ResourceManager.SLURM: LaunchMethod.SRUN,
    ResourceManager.PBS: LaunchMethod.MPIEXEC,
    ResourceManager.LSF: LaunchMethod.JSRUN,
    ResourceManager.FLUX: LaunchMethod.FLUX,
    ResourceManager.LOCAL: LaunchMethod.FORK,
}

_JOBQUEUE_CLUSTERS = {
    ResourceManager.SLURM: "SLURMCluster",
    ResourceManager.PBS: "PBSCluster",
    ResourceManager.LSF: "LSFCluster",
}


def _to_resource_manager(value: ResourceManager | str) -> ResourceManager:
    return ResourceManager.parse(value, "resource_manager")


def _to_launch_method(value: LaunchMethod | str) -> LaunchMethod:
    return LaunchMethod.parse(value, "launch_method")


def _default_launch_method(platform: PlatformDescription) -> LaunchMethod:
    return _DEFAULT_LAUNCH[platform.resource_manager]


def _to_lines(value: str | Iterable[str]) -> tuple[str, ...]:
    # A string is read as text (one or more lines), not as a sequence of characters.
    if isinstance(value, str):
        return tuple(value.splitlines())
    if not isinstance(value, Iterable):
        return (value,)  # kept as is, so that the validator names the field and the value
    return tuple(value)


def _whole_number(minimum: int) -> _Validator:
    def check(platform: PlatformDescription, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise platform._error(f"{attribute.name} must be a whole number, got {value!r}")
        if value < minimum:
            raise platform._error(f"{attribute.name} must be >= {minimum}, got {value!r}")

    return check


def _optional(check: _Validator) -> _Validator:
    def optional_check(platform: PlatformDescription, attribute: Any, value: Any) -> None:
        if value is not None:
            check(platform, attribute, value)

    return optional_check


def _text(platform: PlatformDescription, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise platform._error(f"{attribute.name} must be a string, got {value!r}")


def _lines(platform: PlatformDescription, attribute: attrs.Attribute[Any], value: Any) -> None:
    for line in value:
        if not isinstance(line, str):
            raise platform._error(f"{attribute.name} must hold strings, got {line!r}")


@attrs.frozen(kw_only=True)
class PlatformDescription:
    """One kind of compute node on one HPC system, and how jobs are run there.

    Figures describe a whole node as its user guide states them; `mem_per_node` is in GB.
    Change a copy with `attrs.evolve(frontera, account="ABC123")`.
    """

    resource_manager: ResourceManager = attrs.field(converter=_to_resource_manager)
    name: str = attrs.field(default="", validator=_text)
    description: str = attrs.field(default="", validator=_text)
    fqdn: str | None = attrs.field(default=None, validator=_optional(_text))
    docs_url: str | None = attrs.field(default=None, validator=_optional(_text))
    # The Slurm partition, or the PBS/LSF queue (`queue` is an alias).
    partition: str | None = attrs.field(default=None, validator=_optional(_text))
    # The allocation/project charged for jobs (`project` is an alias).
    account: str | None = attrs.field(default=None, validator=_optional(_text))
    cores_per_node: int = attrs.field(default=1, validator=_whole_number(1))
    hwthreads_per_core: int = attrs.field(default=1, validator=_whole_number(1))
    gpus_per_node: int = attrs.field(default=0, validator=_whole_number(0))
    gpu_type: str | None = attrs.field(default=None, validator=_optional(_text))
    mem_per_node: int | None = attrs.field(default=None, validator=_optional(_whole_number(1)))
    launch_method: LaunchMethod = attrs.field(
        default=attrs.Factory(_default_launch_method, takes_self=True),
        converter=_to_launch_method,
    )
    # Extra batch-script directives the system requires (e.g. Perlmutter's --constraint=gpu).
    batch_directives: tuple[str, ...] = attrs.field(
        default=(), converter=_to_lines, validator=_lines
    )
    # Shell lines that prepare the environment on the nodes (module loads, ...).
    env_setup: tuple[str, ...] = attrs.field(default=(), converter=_to_lines, validator=_lines)
    # Left unexpanded: it names a directory on the remote system, not on this machine.
    work_dir: str = attrs.field(default="$HOME", validator=_text)
    # The RADICAL-Pilot resource label (`<site>.<resource>`), None where there is none.
    radical_resource: str | None = attrs.field(default=None, validator=_optional(_text))

    def __attrs_post_init__(self) -> None:
        if self.gpu_type is not None and self.gpus_per_node == 0:
            raise self._error(f"gpu_type is {self.gpu_type!r} but gpus_per_node is 0")

    def _error(self, message: str) -> PlatformError:
        label = repr(self.name) if self.name else "(unnamed)"
        return PlatformError(f"platform {label}: {message}")

    @property
    def cpus_per_node(self) -> int:
        """Hardware threads per node: what the OS (and Slurm) counts as CPUs."""
        return self.cores_per_node * self.hwthreads_per_core

    @property
    def queue(self) -> str | None:
        return self.partition

    @property
    def project(self) -> str | None:
        return self.account

    def jobqueue_cluster_class_name(self) -> str:
        """The dask_jobqueue class that submits worker jobs to this platform's batch system."""
        cluster = _JOBQUEUE_CLUSTERS.get(self.resource_manager)
        if cluster is None:
            raise self._error(
                f"dask_jobqueue has no cluster class for resource manager "
                f"{self.resource_manager.value!r}"
            )
        return cluster

    def dask_jobqueue_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `jobqueue_cluster_class_name()`: one whole node per worker job,
        one single-threaded worker process per core, so Dask's slots match RHAPSODY's cores."""
        self.jobqueue_cluster_class_name()  # fail early where no cluster class fits
        kwargs: dict[str, Any] = {
            "queue": self.partition,
            "cores": self.cores_per_node,
            "processes": self.cores_per_node,
            "memory": f"{self.mem_per_node}GB" if self.mem_per_node else None,
            "job_script_prologue": list(self.env_setup),
        }
        if self.account:
            kwargs["account"] = self.account
        if self.batch_directives:
            kwargs["job_extra_directives"] = list(self.batch_directives)
        return kwargs


# -- detect(): what the current allocation grants -------------------------------------------


@attrs.frozen(kw_only=True)
class DetectedAllocation:
    """The nodes, cores and GPUs of the allocation this process runs in.

    `cores_per_node` counts CPUs as the batch system grants them (hardware threads where SMT is
    enabled). Where nodes differ, it is the smallest, so a per-node plan fits every node.
    `gpu_ids` are the identifiers a task on a node should be given (e.g. in
    CUDA_VISIBLE_DEVICES). `local_cores` is what the node this process runs on was granted
    (more than `cores_per_node` where nodes got different counts; the same where unknown).
    """

    resource_manager: ResourceManager
    job_id: str | None
    nodes: tuple[str, ...]
    cores_per_node: int
    gpus_per_node: int
    gpu_ids: tuple[str, ...]
    local_cores: int = attrs.field(
        default=attrs.Factory(lambda self: self.cores_per_node, takes_self=True)
    )

    @property
    def total_cores(self) -> int:
        return self.cores_per_node * len(self.nodes)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * len(self.nodes)

    @property
    def nodelist(self) -> str:
        """The nodes as a compressed hostlist, e.g. `nid[001-004]`."""
        return hostlist.compress(self.nodes)


def detect() -> DetectedAllocation:
    """Read the allocation from the environment of the batch system this process runs under.

    Flux is checked first because a Flux instance is often started inside a Slurm or LSF job,
    and then it is the innermost manager that hands out the resources. Outside any batch job,
    the local machine is the allocation.
    """
    env = os.environ
    if env.get("FLUX_URI"):
        return _detect_flux(env)
    if env.get("LSB_JOBID"):
        return _detect_lsf(env)
    if env.get("PBS_JOBID"):
        return _detect_pbs(env)
    if env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID"):
        return _detect_slurm(env)
    gpus = detect_gpus()
    return DetectedAllocation(
        resource_manager=ResourceManager.LOCAL,
        job_id=None,
        nodes=(socket.gethostname(),),
        cores_per_node=detect_cores(),
        gpus_per_node=len(gpus),
        gpu_ids=gpus,
    )


_SLURM_CPU_COUNT = re.compile(r"([0-9]+)(?:\(x[0-9]+\))?")
_DIGITS = re.compile("[0-9]+")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise PlatformError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise PlatformError(f"{name} must be >= 0, got {raw!r}")
    return value


def _env_hostlist(env: Mapping[str, str], name: str) -> list[str]:
    try:
        return hostlist.expand(env[name])
    except hostlist.HostlistError as exc:
        raise PlatformError(f"{name}: {exc}") from None


def _id_list(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _read_host_file(env: Mapping[str, str], name: str) -> list[str]:
    path = env[name]
    try:
        with open(path, encoding="utf-8") as handle:
            hosts = [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise PlatformError(f"{name}: cannot read {path!r}: {exc.strerror}") from None
    if not hosts:
        raise PlatformError(f"{name}: {path!r} lists no hosts")
    return hosts


def _unique(hosts: Iterable[str]) -> tuple[str, ...]:
    # Host files list a host once per slot; keep the first appearance of each.
    return tuple(dict.fromkeys(hosts))


def _slurm_cpus_per_node(env: Mapping[str, str]) -> int | None:
    # SLURM_JOB_CPUS_PER_NODE looks like "72(x2),36": counts with optional repeat factors.
    raw = env.get("SLURM_JOB_CPUS_PER_NODE")
    if not raw:
        return None
    matches = [_SLURM_CPU_COUNT.fullmatch(part.strip()) for part in raw.split(",")]
    counts = [int(match.group(1)) for match in matches if match]
    if len(counts) != len(matches):
        raise PlatformError(f"SLURM_JOB_CPUS_PER_NODE must look like '72(x2),36', got {raw!r}")
    return min(counts)


def _slurm_gpus_requested(env: Mapping[str, str], nodes: int) -> int | None:
    # `--gpus-per-node=2` or `=a100:2` (or a comma list of types); `--gpus` counts the whole
    # job, which says how many a node has only when there is one node.
    raw = env.get("SLURM_GPUS_PER_NODE")
    name = "SLURM_GPUS_PER_NODE"
    if not raw and nodes == 1:
        raw, name = env.get("SLURM_GPUS"), "SLURM_GPUS"
    if not raw:
        return None
    counts = [part.rpartition(":")[2].strip() for part in raw.split(",")]
    if not all(_DIGITS.fullmatch(count) for count in counts):
        raise PlatformError(f"{name} must look like '2' or 'a100:2', got {raw!r}")
    return sum(int(count) for count in counts)


def _detect_slurm(env: Mapping[str, str]) -> DetectedAllocation:
    variable = "SLURM_JOB_NODELIST" if env.get("SLURM_JOB_NODELIST") else "SLURM_NODELIST"
    nodes = _env_hostlist(env, variable) if env.get(variable) else [socket.gethostname()]
    # The job-wide list first: SLURM_CPUS_ON_NODE is only the node this runs on, and under
    # `sbatch -N2 -n3` (CPUs "2,1") it would claim 2 per node, 4 in all, where 3 were granted.
    cores = _slurm_cpus_per_node(env) or _env_int(env, "SLURM_CPUS_ON_NODE") or detect_cores()
    slurm_ids = _id_list(env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS"))
    count = _env_int(env, "SLURM_GPUS_ON_NODE")
    if count is None and not slurm_ids:
        # salloc's shell (not on a compute node) only sees what was asked for.
        count = _slurm_gpus_requested(env, len(set(nodes)))
    gpus = len(slurm_ids) if count is None else count
    # Where Slurm confines the job's devices it renumbers them and sets CUDA_VISIBLE_DEVICES to
    # match; those are the identifiers a task must use, not Slurm's global indices.
    visible = _id_list(env.get("CUDA_VISIBLE_DEVICES"))
    if len(visible) == gpus:
        gpu_ids = visible
    elif len(slurm_ids) == gpus:
        gpu_ids = slurm_ids
    else:
        gpu_ids = tuple(str(index) for index in range(gpus))
    return DetectedAllocation(
        resource_manager=ResourceManager.SLURM,
        job_id=env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID"),
        nodes=_unique(nodes),
        cores_per_node=cores,
        gpus_per_node=gpus,
        gpu_ids=gpu_ids,
        local_cores=_env_int(env, "SLURM_CPUS_ON_NODE") or cores,
    )


def _detect_pbs(env: Mapping[str, str]) -> DetectedAllocation:
    nodes = _read_host_file(env, "PBS_NODEFILE") if env.get("PBS_NODEFILE") else None
    # NCPUS is PBS Pro's per-node count; PBS_NUM_PPN is Torque's.
    cores = _env_int(env, "NCPUS") or _env_int(env, "PBS_NUM_PPN") or detect_cores()
    gpus = detect_gpus()
    return DetectedAllocation(
        resource_manager=ResourceManager.PBS,
        job_id=env["PBS_JOBID"],
        nodes=_unique(nodes or [socket.gethostname()]),
        cores_per_node=cores,
        gpus_per_node=len(gpus),
        gpu_ids=gpus,
    )


def _lsf_slots(env: Mapping[str, str]) -> list[tuple[str, int]]:
    raw = env.get("LSB_MCPU_HOSTS", "").split()
    if raw:
        # "host1 42 host2 42": pairs of host name and slot count.
        if len(raw) % 2 or not all(re.fullmatch("[0-9]+", count) for count in raw[1::2]):
            raise PlatformError(
                f"LSB_MCPU_HOSTS must list 'host slots' pairs, got {env['LSB_MCPU_HOSTS']!r}"
            )
        return [(host, int(count)) for host, count in zip(raw[::2], raw[1::2], strict=True)]
    if env.get("LSB_DJOB_HOSTFILE"):
        # One line per slot.
        hosts = _read_host_file(env, "LSB_DJOB_HOSTFILE")
        return list(Counter(hosts).items())
    return [(socket.gethostname(), detect_cores())]


def _detect_lsf(env: Mapping[str, str]) -> DetectedAllocation:
    slots = _lsf_slots(env)
    # On CORAL systems (Summit, Lassen) the batch script runs on a shared launch node that LSF
    # lists first with a single slot; it is not one of the job's compute nodes.
    if len(slots) > 1 and slots[0][1] == 1 and all(count > 1 for _, count in slots[1:]):
        slots = slots[1:]
    gpus = detect_gpus()
    return DetectedAllocation(
        resource_manager=ResourceManager.LSF,
        job_id=env["LSB_JOBID"],
        nodes=_unique(host for host, _ in slots),
        cores_per_node=min(count for _, count in slots),
        gpus_per_node=len(gpus),
        gpu_ids=gpus,
    )


def _detect_flux(env: Mapping[str, str]) -> DetectedAllocation:
    # Flux exports no node list; the enclosing instance knows its own hosts.
    flux = shutil.which("flux")
    if flux is None:
        raise PlatformError(
            f"FLUX_URI is set ({env['FLUX_URI']!r}) but the flux command is not on PATH, "
            "so the instance's hosts cannot be read"
        )
    try:
        result = subprocess.run(
            [flux, "getattr", "hostlist"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"`flux getattr hostlist` failed: {exc}") from None
    if result.returncode != 0:
        raise PlatformError(
            f"`flux getattr hostlist` exited with {result.returncode}: {result.stderr.strip()}"
        )
    try:
        nodes = hostlist.expand(result.stdout.strip())
    except hostlist.HostlistError as exc:
        raise PlatformError(f"`flux getattr hostlist`: {exc}") from None
    gpus = detect_gpus()
    return DetectedAllocation(
        resource_manager=ResourceManager.FLUX,
        job_id=env.get("FLUX_JOB_ID"),
        nodes=_unique(nodes),
        cores_per_node=detect_cores(),
        gpus_per_node=len(gpus),
        gpu_ids=gpus,
    )


# -- the catalog, through the plugin registry ------------------------------------------------


def list_platforms() -> list[str]:
    """Names of every registered platform, sorted."""
    return sorted(get_plugin_manager().platforms.names())


def get_platform(name: str) -> PlatformDescription:
    """The platform registered as `name`; the error says what to install or what is known."""
    manager = get_plugin_manager()
    platform = manager.platforms.get(name)
    if platform is not None:
        return platform
    registry = manager.platforms
    known = sorted(registry.names())
    if not any(registry.distribution_of(n) == OFFICIAL_PLATFORM_CATALOG for n in known):
        broken = [f.error for f in manager.failures if f.distribution == OFFICIAL_PLATFORM_CATALOG]
        if broken:
            why = f"{OFFICIAL_PLATFORM_CATALOG} is installed but failed to load: {broken[0]}"
        else:
            why = f"the platform catalog is not installed: pip install {OFFICIAL_PLATFORM_CATALOG}"
        raise PlatformNotFoundError(f"platform {name!r} is not available; {why}", name=name)
    raise PlatformNotFoundError(
        f"unknown platform {name!r}; known platforms: {', '.join(known)}", name=name
    )


def __getattr__(name: str) -> PlatformDescription:
    # Private and dunder names are probed by tools (copy, pickle, IPython); they must get the
    # plain AttributeError that hasattr() expects.
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return get_platform(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(list_platforms()))
