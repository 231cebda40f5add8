"""A one-node SLURM cluster in a folder, for tests/test_slurm.py and for trying profiles/slurm by
hand.

munged, slurmctld and slurmd (Debian's slurm-wlm 22.05 and munge: `tools/ensure-system-deps.sh
slurm`) run in the foreground as child processes, each in its own session, with every file
(config from slurm.conf.in and gres.conf.in, state, spool, logs, munge key and socket) inside the
folder and free TCP ports, so the cluster touches nothing of the machine's own SLURM or munge and
several can run side by side. Commands find it through SLURM_CONF (`Cluster.env`). Needs root
(slurmd starts each job as its submitting user).

Nothing outlives it: `stop` cancels the jobs, stops the daemons and kills every process that
carries the cluster's marker in its environment (the daemons, and every job, submitted from an
environment with `Cluster.env`); a daemon whose parent dies without stopping it gets SIGTERM.

    python tools/slurm-cluster/cluster.py /tmp/cluster    # runs until Ctrl-C, prints SLURM_CONF
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import stat
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Environment variable carried by the daemons and (through `env`) by everything submitted to the
#: cluster, so `stop` can find every process of this cluster and of no other.
MARKER = "RADSYNTH_TEST_CLUSTER"


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on this machine right now."""
    probes = [socket.socket() for _ in range(n)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _fill(template: str, values: dict) -> str:
    return string.Template((HERE / template).read_text()).substitute(values)


#: Character devices that read and write nothing, to stand for GPUs when no new node can be made.
NULL_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


def null_devices(folder: Path, n: int) -> list[str]:
    """`n` device files for the node's GPUs: copies of /dev/null in `folder` (mknod, as root), else
    distinct harmless devices of /dev. SLURM needs one file per GPU and counts GPUs by them."""
    folder.mkdir(parents=True, exist_ok=True)
    null = os.stat("/dev/null").st_rdev
    try:
        for k in range(n):
            path = folder / f"gpu{k}"
            if not path.exists():
                os.mknod(path, 0o666 | stat.S_IFCHR, null)
        return [str(folder / f"gpu{k}") for k in range(n)]
    except OSError:
        if n > len(NULL_DEVICES):
            raise
        return list(NULL_DEVICES[:n])


def _die_with_parent() -> None:
    """In a daemon before exec: SIGTERM when the process that started it dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def marked_processes(marker_value: str) -> list[int]:
    """Ids of the processes whose environment has MARKER=marker_value (this process excluded)."""
    wanted = f"{MARKER}={marker_value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or a kernel thread
            pass
    return found


@dataclass
class Cluster:
    root: Path
    cpu_partition: str = "cpu"
    gpu_partition: str = "gpu"
    node: str = "radsynth-node"
    #: CPUs the node declares (more than the machine has: the profile asks 8 per training job).
    cpus: int = 32
    n_a100: int = 2
    n_v100: int = 4
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to use this cluster (and be stopped with it):
        SLURM_CONF, the marker, and bin/ first on PATH (its srun wrapper finds the config in
        jobs)."""
        path = f"{HERE / 'bin'}:{os.environ.get('PATH', os.defpath)}"
        return {"SLURM_CONF": str(self.conf), MARKER: str(self.root), "PATH": path}

    def run(
        self, *command: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """A SLURM client command (sinfo, squeue, scontrol, scancel, sbatch) on this cluster."""
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**os.environ, **self.env},
        )

    def write_config(self) -> None:
        for folder in ("state", "spool", "log", "munge"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o600)
        devices = null_devices(self.root / "dev", self.n_a100 + self.n_v100)
        slurmctld_port, slurmd_port = free_ports(2)
        values = {
            "host": socket.gethostname().split(".")[0],
            "slurmctld_port": slurmctld_port,
            "slurmd_port": slurmd_port,
            "munge_socket": self.munge_socket,
            "root": self.root,
            "node": self.node,
            "cpus": self.cpus,
            "n_a100": self.n_a100,
            "n_v100": self.n_v100,
            "cpu_partition": self.cpu_partition,
            "gpu_partition": self.gpu_partition,
            "a100_files": ",".join(devices[: self.n_a100]),
            "v100_files": ",".join(devices[self.n_a100 :]),
        }
        self.conf.write_text(_fill("slurm.conf.in", values))
        (self.root / "gres.conf").write_text(_fill("gres.conf.in", values))

    def _start(self, name: str, *command: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}; "
                        f"see {self.root / 'log'}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout} s; see {self.root / 'log'}")
            time.sleep(0.2)

    def start(self, timeout: float = 60) -> None:
        """Write the config, start the daemons and wait until the node is idle."""
        self.write_config()
        self._start(
            "munged",
            "munged",
            "--foreground",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={self.root / 'munge' / 'munge.key'}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
        )
        self._wait("munge socket", self.munge_socket.exists, timeout)
        self._start("slurmctld", "slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait(
            "slurmctld",
            lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
            timeout,
        )
        self._start("slurmd", "slurmd", "-D", "-N", self.node, "-f", str(self.conf))
        self._wait("idle node", lambda: self.node_state() == "idle", timeout)

    def node_state(self) -> str:
        result = self.run(
            "sinfo", "--noheader", "--Node", "--format=%t", "--nodes", self.node, check=False
        )
        states = set(result.stdout.split())
        return states.pop() if len(states) == 1 else ""

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, stop the daemons, and kill whatever process of this cluster is left."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        for _ in range(50):
            left = marked_processes(str(self.root))
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "slurm-cluster")
    with Cluster(root) as cluster:
        print(
            f"export SLURM_CONF={cluster.conf}   # partitions {cluster.cpu_partition}, "
            f"{cluster.gpu_partition}",
            flush=True,
        )
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
