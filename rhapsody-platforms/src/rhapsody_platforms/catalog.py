"""Descriptions of real HPC systems, with the figures their public user guides give.

Each figure is per node and comes from the page in `docs_url`; docs/platforms.md repeats them
in a table, and a test keeps the two in step. Cores are those a job may use: where the system
reserves cores for the OS (Frontier, Summit), the reserved ones are left out.
"""

from __future__ import annotations

from rhapsody.platforms import LaunchMethod, PlatformDescription, ResourceManager

frontera = PlatformDescription(
    name="frontera",
    description="TACC Frontera, Cascade Lake (CLX) compute nodes",
    fqdn="frontera.tacc.utexas.edu",
    docs_url="https://docs.tacc.utexas.edu/hpc/frontera/",
    resource_manager=ResourceManager.SLURM,
    partition="normal",
    cores_per_node=56,
    hwthreads_per_core=1,
    mem_per_node=192,
    launch_method=LaunchMethod.IBRUN,
    env_setup=["module load python3"],
    work_dir="$SCRATCH",
    radical_resource="tacc.frontera",
)

vista = PlatformDescription(
    name="vista",
    description="TACC Vista, Grace Hopper (GH200) nodes",
    fqdn="vista.tacc.utexas.edu",
    docs_url="https://docs.tacc.utexas.edu/hpc/vista/",
    resource_manager=ResourceManager.SLURM,
    partition="gh",
    cores_per_node=72,
    hwthreads_per_core=1,
    gpus_per_node=1,
    gpu_type="NVIDIA H200 96GB (GH200 superchip)",
    mem_per_node=120,
    launch_method=LaunchMethod.IBRUN,
    work_dir="$SCRATCH",
)

perlmutter_gpu = PlatformDescription(
    name="perlmutter_gpu",
    description="NERSC Perlmutter, GPU nodes",
    fqdn="perlmutter.nersc.gov",
    docs_url="https://docs.nersc.gov/systems/perlmutter/architecture/",
    resource_manager=ResourceManager.SLURM,
    cores_per_node=64,
    hwthreads_per_core=2,
    gpus_per_node=4,
    gpu_type="NVIDIA A100 40GB",
    mem_per_node=256,
    launch_method=LaunchMethod.SRUN,
    # NERSC selects node types by constraint and charges by QOS; it has no user partitions.
    batch_directives=["--constraint=gpu", "--qos=regular"],
    env_setup=["module load python"],
    work_dir="$PSCRATCH",
    radical_resource="nersc.perlmutter_gpu",
)

perlmutter_cpu = PlatformDescription(
    name="perlmutter_cpu",
    description="NERSC Perlmutter, CPU-only nodes",
    fqdn="perlmutter.nersc.gov",
    docs_url="https://docs.nersc.gov/systems/perlmutter/architecture/",
    resource_manager=ResourceManager.SLURM,
    cores_per_node=128,
    hwthreads_per_core=2,
    mem_per_node=512,
    launch_method=LaunchMethod.SRUN,
    batch_directives=["--constraint=cpu", "--qos=regular"],
    env_setup=["module load python"],
    work_dir="$PSCRATCH",
    radical_resource="nersc.perlmutter",
)

polaris = PlatformDescription(
    name="polaris",
    description="ALCF Polaris",
    fqdn="polaris.alcf.anl.gov",
    docs_url="https://docs.alcf.anl.gov/polaris/hardware-overview/machine-overview/",
    resource_manager=ResourceManager.PBS,
    partition="prod",
    cores_per_node=32,
    hwthreads_per_core=2,
    gpus_per_node=4,
    gpu_type="NVIDIA A100 40GB",
    mem_per_node=512,
    launch_method=LaunchMethod.MPIEXEC,
    # ALCF refuses jobs that do not name the file systems they use.
    batch_directives=["-l filesystems=home:eagle"],
    env_setup=["module use /soft/modulefiles", "module load conda"],
    radical_resource="anl.polaris",
)

aurora = PlatformDescription(
    name="aurora",
    description="ALCF Aurora",
    fqdn="aurora.alcf.anl.gov",
    docs_url="https://docs.alcf.anl.gov/aurora/hardware-overview/machine-overview/",
    resource_manager=ResourceManager.PBS,
    partition="prod",
    cores_per_node=104,
    hwthreads_per_core=2,
    gpus_per_node=6,
    gpu_type="Intel Data Center GPU Max 1550",
    mem_per_node=1024,
    launch_method=LaunchMethod.MPIEXEC,
    batch_directives=["-l filesystems=home:flare"],
    env_setup=["module load frameworks"],
    radical_resource="anl.aurora",
)

frontier = PlatformDescription(
    name="frontier",
    description="OLCF Frontier (each MI250X is two GCDs, which Slurm counts as GPUs)",
    fqdn="frontier.olcf.ornl.gov",
    docs_url="https://docs.olcf.ornl.gov/systems/frontier_user_guide.html",
    resource_manager=ResourceManager.SLURM,
    partition="batch",
    # 64 physical cores; low-noise mode reserves one per L3 region for the system.
    cores_per_node=56,
    hwthreads_per_core=2,
    gpus_per_node=8,
    gpu_type="AMD Instinct MI250X (GCD)",
    mem_per_node=512,
    launch_method=LaunchMethod.SRUN,
    env_setup=["module load cray-python"],
    radical_resource="ornl.frontier",
)

summit = PlatformDescription(
    name="summit",
    description="OLCF Summit (decommissioned November 2024)",
    fqdn="summit.olcf.ornl.gov",
    docs_url="https://docs.olcf.ornl.gov/systems/summit_user_guide.html",
    resource_manager=ResourceManager.LSF,
    partition="batch",
    # 44 physical cores; one per socket is reserved for the system.
    cores_per_node=42,
    hwthreads_per_core=4,
    gpus_per_node=6,
    gpu_type="NVIDIA V100 16GB",
    mem_per_node=512,
    launch_method=LaunchMethod.JSRUN,
    radical_resource="ornl.summit",
)

delta_gpu = PlatformDescription(
    name="delta_gpu",
    description="NCSA Delta, 4-way NVIDIA A100 GPU nodes",
    fqdn="login.delta.ncsa.illinois.edu",
    docs_url="https://docs.ncsa.illinois.edu/systems/delta/en/latest/user_guide/architecture.html",
    resource_manager=ResourceManager.SLURM,
    partition="gpuA100x4",
    cores_per_node=64,
    hwthreads_per_core=1,
    gpus_per_node=4,
    gpu_type="NVIDIA A100 40GB",
    mem_per_node=256,
    launch_method=LaunchMethod.SRUN,
    # Delta nodes are shared: a job gets GPUs only when it asks for them.
    batch_directives=["--gpus-per-node=4"],
    env_setup=["module reset", "module load anaconda3_gpu"],
    radical_resource="ncsa.delta_gpu_a100_4way",
)

delta_cpu = PlatformDescription(
    name="delta_cpu",
    description="NCSA Delta, CPU-only nodes",
    fqdn="login.delta.ncsa.illinois.edu",
    docs_url="https://docs.ncsa.illinois.edu/systems/delta/en/latest/user_guide/architecture.html",
    resource_manager=ResourceManager.SLURM,
    partition="cpu",
    cores_per_node=128,
    hwthreads_per_core=1,
    mem_per_node=256,
    launch_method=LaunchMethod.SRUN,
    env_setup=["module reset", "module load anaconda3_cpu"],
    radical_resource="ncsa.delta",
)

CATALOG: tuple[PlatformDescription, ...] = (
    frontera,
    vista,
    perlmutter_gpu,
    perlmutter_cpu,
    polaris,
    aurora,
    frontier,
    summit,
    delta_gpu,
    delta_cpu,
)
