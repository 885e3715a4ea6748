"""A real single-node SLURM cluster for the tests: Debian's slurmctld, slurmd and munge, installed
when missing (as root, through apt-get), configured in a temporary folder (its own ports, munge
socket, state and logs: nothing global is touched), started, and stopped by pid afterwards.

Clients reach it through ``SLURM_CONF``, which :meth:`Cluster.start` sets in ``os.environ`` (so
the sbatch, squeue and scontrol that submitit and the tests run go to this cluster) and
:meth:`Cluster.stop` restores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
MUNGED = "/usr/sbin/munged"
PARTITION = "debug"


class Unavailable(Exception):
    """Why no cluster can run here (the tests skip with it)."""


def missing_programs() -> list[str]:
    found = [shutil.which(name) for name in PROGRAMS]
    missing = [name for name, path in zip(PROGRAMS, found) if path is None]
    return missing + ([] if Path(MUNGED).exists() else ["munged"])


def install() -> None:
    """Install the Debian packages when a program is missing; refresh the package lists only
    when the first try fails (a fresh machine's lists may be empty or stale)."""
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise Unavailable(f"SLURM is not installed and installing {' '.join(PACKAGES)} needs root")
    if shutil.which("apt-get") is None:
        raise Unavailable("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        update = subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        if update.returncode != 0:
            raise Unavailable(f"apt-get update failed: {last_line(update.stderr)}")
        again = subprocess.run(command, env=env, capture_output=True, text=True)
        if again.returncode != 0:
            raise Unavailable(
                f"apt-get install {' '.join(PACKAGES)} failed: {last_line(again.stderr)}"
            )
    if missing_programs():
        raise Unavailable(f"installed {' '.join(PACKAGES)} but {missing_programs()} are missing")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    return 1024


def alive(pid: int) -> bool:
    """Running and not a zombie (pid 1 of these machines may not reap a stopped daemon)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_process(pid: int) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


class Cluster:
    """One node (this host), ``nproc`` CPUs, one partition ``debug``; its files in a fresh
    temporary folder that munged's user can reach (pytest's own are private to root), removed
    by :meth:`stop`."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="psa-slurm-"))
        self.root.chmod(0o755)
        root = self.root
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = memory_mb()
        self.conf = root / "slurm.conf"
        self.munge = root / "munge"
        self.pid_files = {
            "slurmd": root / "slurmd.pid",
            "slurmctld": root / "slurmctld.pid",
            "munged": self.munge / "munged.pid",
        }
        self._saved_conf: str | None = None

    def config(self) -> str:
        root = self.root
        lines = [
            "ClusterName=psatest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # A requeued job may start again cred_expire + 1 s later (default 120 s).
            f"AuthInfo=socket={self.munge / 'munge.socket'},cred_expire=5",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}",
            f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            # Otherwise a requeued job waits ~24 s after it becomes eligible.
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "MailProg=/bin/true",
            "MinJobAge=3600",
            "KillWait=5",  # seconds from a cancel's SIGTERM to its SIGKILL (default 30)
            "ReturnToService=2",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60) -> None:
        self._saved_conf = os.environ.get("SLURM_CONF")
        try:
            install()
            if os.geteuid() != 0:
                raise Unavailable("starting SLURM's daemons here needs root")
            for folder in (self.root / "state", self.root / "spool"):
                folder.mkdir(parents=True, exist_ok=True)
            self.conf.write_text(self.config())
            os.environ["SLURM_CONF"] = str(self.conf)
            self._start_munged()
            self._run(["slurmctld", "-c"])
            self._run(["slurmd"])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_munged(self) -> None:
        self.munge.mkdir(mode=0o755)
        shutil.chown(self.munge, "munge", "munge")
        self._run(
            [
                "runuser", "-u", "munge", "--", MUNGED, "--force",
                f"--socket={self.munge / 'munge.socket'}",
                f"--pid-file={self.pid_files['munged']}",
                f"--log-file={self.munge / 'munged.log'}",
                f"--seed-file={self.munge / 'munged.seed'}",
            ]
        )  # fmt: skip

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            raise Unavailable(f"{command[0]} did not start: {last_line(done.stderr)}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
            state = done.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        log = self.root / "slurmd.log"
        tail = last_line(log.read_text()) if log.exists() else "no slurmd log"
        raise Unavailable(f"the SLURM node is {state or 'not up'} after {timeout:.0f}s: {tail}")

    def stop(self) -> None:
        """Cancel what is left and wait for its processes to end, then stop slurmd, slurmctld
        and munged by their pid files; a job process that outlived its slurmd is killed."""
        if self.pid_files["slurmctld"].exists():
            subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
            deadline = time.monotonic() + 30
            while self.job_processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            path = self.pid_files[name]
            if path.exists():
                stop_process(int(path.read_text().split()[0]))
        for pid in self.job_processes():
            stop_process(pid)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._saved_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._saved_conf

    def job_processes(self) -> list[int]:
        """The live processes of this cluster's jobs: a job's environment names its SLURM_JOB_ID
        and this cluster's SLURM_CONF."""
        conf = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                variables = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            in_job = any(variable.startswith(b"SLURM_JOB_ID=") for variable in variables)
            if conf in variables and in_job and alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def jobs(self) -> dict[str, tuple[str, str]]:
        """Every job this cluster knows (finished ones included): id -> (state, reason)."""
        done = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            check=True,
        )
        states = {}
        for line in done.stdout.splitlines():
            job, state, reason = line.split("|")
            states[job] = (state, reason)
        return states
