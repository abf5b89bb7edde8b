"""The RHAPSODY platform catalog: descriptions of real HPC systems.

Use them through core, which finds them via the `rhapsody_register_platforms` hook::

    from rhapsody.platforms import frontera

The descriptions themselves are in `rhapsody_platforms.catalog`.
"""
