"""RHAPSODY's 'radical_pilot' backend, on RADICAL-Pilot.

`rhapsody.get_backend("radical_pilot", ...)` loads `rhapsody_radical.backend`; importing this
package does not import RADICAL-Pilot. `rhapsody_radical.hermetic` confines RADICAL-Pilot to a
scratch directory and the loopback interface (tests, benchmarks, machines without network).
"""
