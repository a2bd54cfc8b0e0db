"""A throw-away single-node SLURM cluster (Debian's slurm-wlm + munge) for tests and CI.

What it sets up, all as root daemons without systemd (facts checked in docs/DESIGN §6):

* an isolated ``munged`` (own key, socket, pid/log files in the cluster directory);
* ``/etc/slurm/slurm.conf`` + ``/etc/slurm/gres.conf`` (that path is required: the Snakemake jobstep plugin
  strips ``SLURM_CONF`` before its inner ``srun``). Both files carry a marker line; a config without the marker
  (a real cluster's) is never overwritten, and ours are removed again by :meth:`LocalSlurm.stop`;
* ``slurmctld`` and ``slurmd`` (node ``localhost`` at 127.0.0.1, one fake GPU ``gpu:fake:1`` backed by
  ``/dev/null``), on free TCP ports, state and logs under the cluster directory;
* no accounting database: ``sacct`` fails, so clients must query ``squeue``; ``MinJobAge`` is large so finished
  jobs stay visible there. Every finished job is also appended to ``jobcomp.txt`` (``jobcomp/filetxt``), which
  records its partition and TRES (``gres/gpu=1`` for GPU jobs) for tests to check.

Only one such cluster can run per machine (the config path is global): :class:`LocalSlurm` holds an exclusive
``flock`` on ``/tmp/neuface-slurm.lock`` while it runs, so concurrent test sessions wait for each other.

Command line (for trying the SLURM profile by hand)::

    python tests/slurm/cluster.py up /tmp/nfslurm      # installs packages if needed (root + apt), starts daemons
    python tests/slurm/cluster.py down /tmp/nfslurm    # stops them (by PID) and removes the config files
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("neuface.tests.slurm")

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged")
CONF_DIR = Path("/etc/slurm")
MARKER = "# neuface-test-cluster: written by tests/slurm/cluster.py; removed when the test cluster stops"
LOCK_PATH = Path("/tmp/neuface-slurm.lock")
PARTITION = "neuface_ci"
NODE = "localhost"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be brought up here (not root, no apt, install failed, a real config present...)."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_packages(timeout: float = 600) -> None:
    """Install Debian's SLURM + munge packages when missing (root and apt-get required).

    Set ``NEUFACE_SLURM_INSTALL=0`` to forbid the installation (the cluster is then unavailable if missing).

    Raises:
        ClusterUnavailable: with the reason.
    """
    if not missing_binaries():
        return
    if os.environ.get("NEUFACE_SLURM_INSTALL", "1") == "0":
        raise ClusterUnavailable(f"SLURM binaries missing ({missing_binaries()}) and NEUFACE_SLURM_INSTALL=0")
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"SLURM binaries missing ({missing_binaries()}) and not running as root")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"SLURM binaries missing ({missing_binaries()}) and no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClusterUnavailable(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed (rc {proc.returncode}): {proc.stderr[-500:]}")
    if missing_binaries():
        raise ClusterUnavailable(f"installed {PACKAGES} but still missing {missing_binaries()}")


def _alive(pidfile: Path) -> bool:
    """Whether the process named in ``pidfile`` exists."""
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """CPUs and RealMemory of this machine as ``slurmd -C`` reports them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    return {"CPUs": int(fields.get("CPUs", os.cpu_count() or 1)), "RealMemory": int(fields.get("RealMemory", 1024))}


@dataclass
class LocalSlurm:
    """A single-node cluster rooted at ``root`` (keep the path short: it holds a unix socket).

    Args:
        root: directory for state, logs, munge socket and key.
        min_cpus / min_memory_mb: the node is declared with at least this many CPUs / MB (with
            ``SlurmdParameters=config_overrides``, so requests sized for a real GPU node are accepted here;
            memory is not enforced: ``CR_Core``).
        gpus: fake GPUs on the node.
    """

    root: Path
    min_cpus: int = 4
    min_memory_mb: int = 65536
    gpus: int = 1
    partition: str = PARTITION
    min_job_age: int = 3600
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _lock_fh: object | None = None

    # ------------------------------------------------------------------------------------------ paths
    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.txt"

    @property
    def ctld_log(self) -> Path:
        return self.root / "log" / "slurmctld.log"

    @property
    def slurmd_log(self) -> Path:
        return self.root / "log" / "slurmd.log"

    # ------------------------------------------------------------------------------------------ config
    def slurm_conf(self, ctld_port: int, slurmd_port: int) -> str:
        hw = node_hardware()
        cpus = max(hw["CPUs"], self.min_cpus)
        mem = max(hw["RealMemory"], self.min_memory_mb)
        r = self.root
        return "\n".join([
            MARKER,
            f"# cluster root: {r}",
            "ClusterName=neufaceci",
            f"SlurmctldHost={NODE}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd.pid",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin",
            "SlurmdParameters=config_overrides",
            "GresTypes=gpu",
            "AccountingStorageType=accounting_storage/none",
            "MailProg=/bin/true",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            f"MinJobAge={self.min_job_age}",
            "ReturnToService=2",
            "MpiDefault=none",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            "SlurmdTimeout=300",
            "SlurmctldTimeout=300",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus}"
            f" ThreadsPerCore=1 RealMemory={mem} Gres=gpu:fake:{self.gpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={NODE} Default=NO MaxTime=INFINITE State=UP",
            "",
        ])

    def gres_conf(self) -> str:
        return "\n".join([MARKER, f"# cluster root: {self.root}", "AutoDetect=off",
                          f"NodeName={NODE} Name=gpu Type=fake Count={self.gpus} File=/dev/null", ""])

    # ------------------------------------------------------------------------------------------ lifecycle
    def _lock(self, timeout: float) -> None:
        fh = open(LOCK_PATH, "a+")  # noqa: SIM115 - held for the cluster's lifetime
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.close()
                    msg = f"another test cluster holds {LOCK_PATH} for over {timeout:.0f} s"
                    raise ClusterUnavailable(msg) from None
                time.sleep(1)
        self._lock_fh = fh

    def _write_conf(self, name: str, text: str) -> None:
        path = CONF_DIR / name
        old = path.read_text(errors="replace") if path.exists() else ""
        if old and MARKER not in old:
            raise ClusterUnavailable(f"{path} exists and is not ours (a real cluster's config?): not touching it")
        pidfile = re.search(r"^SlurmctldPidFile=(\S+)", old, flags=re.MULTILINE)
        if pidfile and str(self.root) not in old and _alive(Path(pidfile.group(1))):
            root = re.search(r"^# cluster root: (\S+)", old, flags=re.MULTILINE)
            raise ClusterUnavailable(f"another test cluster is running (root {root.group(1) if root else '?'}); "
                                     f"stop it with: python {__file__} down <root>")
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - owned by the child
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        out.close()

    def start(self, timeout: float = 60, lock_timeout: float = 600) -> LocalSlurm:
        """Start munged, slurmctld and slurmd; returns when the node is idle.

        Raises:
            ClusterUnavailable: if something does not come up (daemon logs are in the message).
        """
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test cluster runs its daemons as root; not root")
        if missing_binaries():
            raise ClusterUnavailable(f"SLURM binaries missing: {missing_binaries()}")
        self._lock(lock_timeout)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        r = self.root
        for sub in ("munge", "munge-key", "state", "spool", "run", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o755)  # clients need to reach the socket
        os.chmod(r / "munge-key", 0o700)
        key = r / "munge-key" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={r}/munge/munged.pid",
                               f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
        self._write_conf("slurm.conf", self.slurm_conf(free_port(), free_port()))
        self._write_conf("gres.conf", self.gres_conf())
        self._spawn("slurmctld", ["slurmctld", "-D", "-c"])
        self._wait(lambda: self._run(["scontrol", "ping"]).returncode == 0, timeout, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE])
        self._wait(self.node_idle, timeout, "node idle in sinfo")
        log.info("test cluster up in %s (partition %s)", r, self.partition)

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, **kw)

    def node_idle(self) -> bool:
        proc = self._run(["sinfo", "-h", "-N", "-p", self.partition, "-o", "%N %t"])
        return proc.returncode == 0 and f"{NODE} idle" in proc.stdout

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise ClusterUnavailable(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs()}")
            if ok():
                return
            time.sleep(0.3)
        raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 2000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")[-tail:]
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel our jobs, stop the daemons we started (by PID), remove our config files, release the lock."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--partition", self.partition], check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for name in ("slurm.conf", "gres.conf"):
            path = CONF_DIR / name
            if path.exists() and MARKER in path.read_text(errors="replace") and str(self.root) in path.read_text():
                path.unlink()
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ------------------------------------------------------------------------------------------ inspection
    def finished_jobs(self) -> list[dict[str, str]]:
        """Records of finished jobs from ``jobcomp/filetxt`` (``JobId``, ``JobState``, ``Partition``, ``Tres``...)."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="single-node SLURM test cluster")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("root", type=Path, help="cluster directory (short path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    root = args.root.resolve()
    if args.action == "up":
        ensure_packages()
        cluster = LocalSlurm(root)
        cluster.start()
        pids = {n: p.pid for n, p in cluster.procs.items()}
        (root / "pids").write_text("\n".join(f"{n} {pid}" for n, pid in pids.items()) + "\n")
        log.info("daemons %s; stop with: python %s down %s", pids, __file__, root)
        cluster._lock_fh = None  # the lock is released when this process exits; `down` stops by PID
        return 0
    pidfile = root / "pids"
    if pidfile.exists():
        for line in pidfile.read_text().splitlines():
            name, pid = line.split()
            try:
                os.kill(int(pid), signal.SIGTERM)
                log.info("stopped %s (pid %s)", name, pid)
            except ProcessLookupError:
                pass
        pidfile.unlink()
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and MARKER in path.read_text(errors="replace") and str(root) in path.read_text():
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
