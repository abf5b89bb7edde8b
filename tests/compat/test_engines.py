"""rhapsody-py 0.6.0's import paths and constructor arguments of the engine backends
(issue 16, item 9, in part)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest


def test_old_import_paths_import_no_engine_until_used() -> None:
    script = (
        "import sys, rhapsody.backends, rhapsody.backends.execution\n"
        "assert 'dask' not in sys.modules and 'radical.pilot' not in sys.modules\n"
        "from rhapsody.backends import DaskExecutionBackend\n"
        "from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend as D\n"
        "from rhapsody.backends.execution import DaskExecutionBackend as E\n"
        "assert D is DaskExecutionBackend is E and DaskExecutionBackend.backend_name == 'dask'\n"
        "assert 'distributed' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_radical_resources_are_the_pilot_description_and_raptor_config_is_refused() -> None:
    pytest.importorskip("radical.pilot")
    from rhapsody.backends.execution.radical_pilot import RadicalExecutionBackend

    backend = RadicalExecutionBackend(resources={"resource": "local.localhost", "cores": 2})
    assert backend.backend_name == "radical_pilot"
    with pytest.raises(TypeError, match="raptor_config is not supported"):
        RadicalExecutionBackend(resources={"resource": "local.localhost"}, raptor_config={})


def _sum(values: list[int]) -> int:
    return sum(values)


def test_dask_resources_and_client_arguments() -> None:
    pytest.importorskip("distributed")
    from rhapsody import ComputeTask
    from rhapsody.backends import DaskExecutionBackend

    async def main() -> list[int]:
        results = []
        backend = await DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
        try:
            task = ComputeTask(function=_sum, args=[[1, 2, 3]])
            await backend.submit_tasks([task])
            results.append((await task).return_value)
            from distributed import Client

            # a Client of rhapsody-py's form: the backend works on that client's scheduler
            address = backend.client.scheduler.address  # type: ignore[attr-defined]
            async with Client(address, asynchronous=True) as client:
                second = await DaskExecutionBackend(client=client, name="dask.client")
                try:
                    again = ComputeTask(function=_sum, args=[[4, 5]])
                    await second.submit_tasks([again])
                    results.append((await again).return_value)
                finally:
                    await second.shutdown()
        finally:
            await backend.shutdown()
        return results

    assert asyncio.run(main()) == [6, 9]
