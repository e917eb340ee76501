"""Many runs on Ray: sweeps (Ray Tune), bench devices as cluster resources, and the benchmarks' grids.

Ray is the optional extra ``hil[cluster]``; nothing outside this package imports it. One module per
concern: :mod:`.engine` (connecting to a local or remote Ray), :mod:`.devices` (bench devices as
resources and the per-node registry that leases their URLs), :mod:`.reporting` (trials' metrics and
events into the driver's run store), :mod:`.sweep` (sweep files, trials, results).
"""
