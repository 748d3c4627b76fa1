"""The only code that touches privileges. Import `pesto.sandbox.client` for
the server's side. This package root imports nothing, so that the spawner
(which forks the slot supervisors) stays small.

Where things are:

- client.py: the server's side: slots, job sessions, the spawner's start.
- protocol.py: the messages between the server and a slot's supervisor.
- spawner.py: the root process that forks one supervisor per slot.
- supervisor.py: a slot's loop: one job after another, each cleaned up.
- leasing.py, uids.py: a job's uid, leased one job ahead, locked per uid.
- workdir.py: a job's work dir, made and filled without following links.
- standby.py, helper.py, pesto-exec.c: the exec helper, started ahead of a stage.
- watch.py: a running stage: stdin, output cap, deadline, memory watch, its end.
- status.py: the one type and the one function for how a stage ended.
- cleanup.py: kill by uid, reap, remove a tree, sweep what a dead holder left.
- context.py, kernel.py: what the host offers, probed once; syscalls os lacks.
- seccomp.py, landlock.py, namespaces.py, cgroups.py, memory.py: the layers.
- artifacts.py, reach.py, cpus.py: compile outputs, path checks, CPU placement.
"""
