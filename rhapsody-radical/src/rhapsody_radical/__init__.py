"""RHAPSODY's 'radical_pilot' backend, on RADICAL-Pilot.

`rhapsody.get_backend("radical_pilot", ...)` loads `rhapsody_radical.backend`; importing this
package does not import RADICAL-Pilot. `rhapsody_radical.hermetic` confines RADICAL-Pilot to a
scratch directory (tests, benchmarks, machines without network); `rhapsody_radical.loopback`
keeps a local pilot's endpoints on the loopback interface; `rhapsody_radical.slurm` writes the
resource configuration of a SLURM platform (a pilot job, or a pilot in the current job).
"""
